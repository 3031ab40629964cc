import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { JsonEditor } from "./JsonEditor";

afterEach(cleanup);

describe("JsonEditor", () => {
  it("refuses invalid JSON and submits the parsed value", () => {
    const submit = vi.fn();
    render(<JsonEditor initial={{ price: 1 }} submitLabel="Patch output" onSubmit={submit} />);
    const box = screen.getByLabelText("JSON value");
    const button = screen.getByRole("button", { name: "Patch output" });
    fireEvent.change(box, { target: { value: "{price: 21" } });
    expect(screen.getByRole("alert").textContent).toMatch(/Not valid JSON/);
    expect((button as HTMLButtonElement).disabled).toBe(true);
    fireEvent.click(button);
    expect(submit).not.toHaveBeenCalled();
    fireEvent.change(box, { target: { value: '{"price": 21}' } });
    fireEvent.click(button);
    expect(submit).toHaveBeenCalledWith({ price: 21 });
  });
});
