import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render } from "@testing-library/react";
import { Waterfall } from "./Waterfall";

afterEach(cleanup);

describe("Waterfall", () => {
  it("draws one row per span, marks retries and reports the selected step", () => {
    const select = vi.fn();
    const { container } = render(
      <Waterfall
        model={{ total: 1000, spans: [
          { stepId: "a", name: "reserve", kind: "step", status: "completed", queuedAt: 0, start: 100, end: 300, open: false, retries: 0 },
          { stepId: "b", name: "charge", kind: "sleep", status: "failed", queuedAt: 300, start: 400, end: 1000, open: false, retries: 2 },
        ] }}
        selected="b"
        onSelect={select}
      />,
    );
    const rows = container.querySelectorAll("[data-step]");
    expect(rows).toHaveLength(2);
    expect(rows[1]?.getAttribute("aria-pressed")).toBe("true");
    expect(rows[1]?.textContent).toContain("↻2");
    const bar = rows[0]?.querySelectorAll("span.absolute")[1] as HTMLElement;
    expect(bar.style.left).toBe("10%");
    expect(bar.style.width).toBe("20%");
    fireEvent.click(rows[0] as Element);
    expect(select).toHaveBeenCalledWith("a");
  });
});
