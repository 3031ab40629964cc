import { afterEach, describe, expect, it, vi } from "vitest";
import { act, cleanup, renderHook } from "@testing-library/react";
import { RELOAD_PAUSE_MS, useResource } from "./resource";

afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

describe("useResource", () => {
  it("coalesces reloads asked for while a request is in flight into one more request", async () => {
    vi.useFakeTimers();
    const answers = [deferred<number>(), deferred<number>(), deferred<number>()];
    let calls = 0;
    const load = vi.fn(() => answers[calls++]?.promise ?? Promise.resolve(-1));
    const { result } = renderHook(() => useResource(load, []));
    expect(load).toHaveBeenCalledTimes(1);
    act(() => { for (let i = 0; i < 5; i++) result.current.reload(); });
    expect(load).toHaveBeenCalledTimes(1);
    await act(async () => { answers[0]?.resolve(1); });
    expect(result.current.data).toBe(1);
    expect(load).toHaveBeenCalledTimes(1);
    await act(async () => { vi.advanceTimersByTime(RELOAD_PAUSE_MS); });
    expect(load).toHaveBeenCalledTimes(2);
    await act(async () => { answers[1]?.resolve(2); });
    expect(result.current.data).toBe(2);
    // Quiet again: a reload goes at once.
    act(() => result.current.reload());
    expect(load).toHaveBeenCalledTimes(3);
  });

  it("drops an answer for inputs that changed meanwhile", async () => {
    const slow = deferred<string>();
    const { result, rerender } = renderHook(({ id }) => useResource(() => (id === "a" ? slow.promise : Promise.resolve("b")), [id]), { initialProps: { id: "a" } });
    rerender({ id: "b" });
    await act(async () => { await Promise.resolve(); });
    await act(async () => { slow.resolve("a"); });
    expect(result.current.data).toBe("b");
  });
});
