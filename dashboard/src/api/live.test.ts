import { describe, expect, it } from "vitest";
import { parseFrame, subjectMatches } from "./live";

describe("live feed", () => {
  it("matches NATS-style patterns", () => {
    expect(subjectMatches("system.run.>", "system.run.r1.run.completed")).toBe(true);
    expect(subjectMatches("system.run.r1.>", "system.run.r2.run.completed")).toBe(false);
    expect(subjectMatches("system.*.x", "system.run.x")).toBe(true);
    expect(subjectMatches("system.run.>", "system.run")).toBe(false);
  });

  it("reads event frames and ignores the rest", () => {
    expect(parseFrame('{"type":"event","topic":"system.run.r1.run.created","data":{"kind":"run.created"}}')).toEqual({
      subject: "system.run.r1.run.created",
      data: { kind: "run.created" },
    });
    expect(parseFrame('{"type":"subscription_result","success":true}')).toBeNull();
    expect(parseFrame("not json")).toBeNull();
  });
});
