import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { ResultView } from "./ResultView";

describe("ResultView", () => {
  it("renders arrays of objects as a table", () => {
    const { container } = render(<ResultView value={[{ name: "a", n: 1 }, { name: "b", n: { x: 2 } }]} />);
    const headers = [...container.querySelectorAll("th")].map((th) => th.textContent);
    expect(headers).toEqual(["name", "n"]);
    const cells = [...container.querySelectorAll("tbody tr")].map((tr) =>
      [...tr.querySelectorAll("td")].map((td) => td.textContent),
    );
    expect(cells).toEqual([
      ["a", "1"],
      ["b", '{"x":2}'],
    ]);
  });

  it("renders a base64 PNG as an image", () => {
    render(<ResultView value={{ png: "iVBORw0KGgoAAAANSUhEUg==" }} />);
    expect(screen.getByRole("img").getAttribute("src")).toBe("data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==");
  });

  it("renders objects as a JSON tree with every key", () => {
    const { container } = render(<ResultView value={{ a: 1, b: { d: "default" } }} />);
    expect(container.querySelector("[data-kind=json]")).not.toBeNull();
    const keys = [...container.querySelectorAll(".json-key")].map((k) => k.textContent);
    expect(keys).toEqual(["a: ", "b: ", "d: "]);
    expect(container.textContent).toContain('"default"');
  });

  it("renders an error with its traceback", () => {
    const { container } = render(
      <ResultView value={{ error: { name: "ZeroDivisionError", message: "division by zero", stack: "Traceback (most recent call last)" } }} />,
    );
    expect(container.querySelector(".error-title")!.textContent).toBe("ZeroDivisionError: division by zero");
    expect(container.querySelector(".traceback")!.textContent).toContain("Traceback");
  });

  it("offers a file for download", () => {
    render(<ResultView value={{ file: { content: "aGk=", filename: "hi.txt" } }} />);
    const link = screen.getByRole("link");
    expect(link.getAttribute("download")).toBe("hi.txt");
  });
});
