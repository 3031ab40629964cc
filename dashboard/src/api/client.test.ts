import { describe, expect, it } from "vitest";
import { ApiError, Client, withQuery } from "./client";

describe("Client", () => {
  it("sends the session's key and environment and surfaces the server's message", async () => {
    const seen: { url: string; init: RequestInit }[] = [];
    const fetcher = async (url: RequestInfo | URL, init?: RequestInit) => {
      seen.push({ url: String(url), init: init ?? {} });
      return new Response(JSON.stringify({ code: "not_found", message: "run 'x' not found" }), { status: 404 });
    };
    const client = new Client({ token: "ifkey_t", env: "staging" }, fetcher);
    const error = await client.get("/api/v1/runs/x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).message).toBe("run 'x' not found");
    expect((error as ApiError).status).toBe(404);
    const headers = seen[0]?.init.headers as Record<string, string>;
    expect(headers.authorization).toBe("Bearer ifkey_t");
    expect(headers["x-ironflow-environment"]).toBe("staging");
  });

  it("calls Connect methods with JSON", async () => {
    let url = "";
    const client = new Client({ token: null, env: null }, async (u, init) => {
      url = String(u);
      return new Response(init?.body as string, { status: 200 });
    });
    expect(await client.connect("IronflowService", "PauseRun", { runId: "r1" })).toEqual({ runId: "r1" });
    expect(url).toBe("/ironflow.v1.IronflowService/PauseRun");
  });

  it("leaves empty filters out of the query", () => {
    expect(withQuery("/api/v1/runs", { status: "", function_id: "f", cursor: undefined, limit: 50 })).toBe("/api/v1/runs?function_id=f&limit=50");
  });
});
