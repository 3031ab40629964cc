import { describe, expect, it } from "vitest";
import { matchPath } from "./router";
import { projectionOf, rebuildProgress } from "../pages/Projections";

describe("matchPath", () => {
  it("binds parameters and rejects other shapes", () => {
    expect(matchPath("/runs/:id", "/runs/01J%2Fx")).toEqual({ id: "01J/x" });
    expect(matchPath("/runs/:id", "/runs")).toBeNull();
    expect(matchPath("/", "/")).toEqual({});
    expect(matchPath("/runs/:id", "/runs/%E0%A4%A")).toEqual({ id: "%E0%A4%A" });
    expect(matchPath("/streams/:type/:id", "/streams/order/o-1")).toEqual({ type: "order", id: "o-1" });
  });
});

describe("rebuildProgress", () => {
  it("is the share of the rebuild's range consumed", () => {
    expect(rebuildProgress({ rebuildTargetSeq: "200", rebuildStartCursor: "100", lastEventSeq: "150" })).toBe(50);
    expect(rebuildProgress({ lastEventSeq: "5" })).toBeNull();
    expect(rebuildProgress({ rebuildTargetSeq: "10", rebuildStartCursor: "10", lastEventSeq: "10" })).toBe(100);
  });
});

describe("projectionOf", () => {
  it("reads the definition from GetProjection's registry entry", () => {
    expect(projectionOf({ name: "p", registry: { name: "p", events: ["e.order"], type: "sql" } })?.events).toEqual(["e.order"]);
    expect(projectionOf({ name: "p", events: ["x"] })?.events).toEqual(["x"]);
  });
});
