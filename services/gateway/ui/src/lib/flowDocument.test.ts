import { describe, expect, it } from "vitest";
import { flowToText, moduleAtLocation, NEW_FLOW, parseFlowText } from "./flowDocument";

describe("flow documents", () => {
  it("round-trips YAML and JSON", () => {
    const parsed = parseFlowText(NEW_FLOW, "yaml");
    expect(parsed.error).toBeNull();
    expect(parsed.flow!.value.modules.map((m) => m.id)).toEqual(["numbers", "each", "size"]);
    for (const format of ["yaml", "json"] as const) {
      expect(parseFlowText(flowToText(parsed.flow!, format), format).flow).toEqual(parsed.flow);
    }
  });

  it("reports YAML errors with their line", () => {
    const parsed = parseFlowText("summary: x\nvalue:\n  modules: [\n", "yaml");
    expect(parsed.flow).toBeNull();
    expect(parsed.error!.line).toBeGreaterThanOrEqual(3);
    expect(parseFlowText("summary: x\n", "yaml").error!.message).toContain("value.modules");
  });

  it("finds the module an error location names, inside loops and branches", () => {
    const flow = parseFlowText(NEW_FLOW, "yaml").flow!;
    expect(moduleAtLocation(flow.value, "value.modules[1].value.input_transforms.x.expr")).toBe("each");
    expect(moduleAtLocation(flow.value, "value.modules[1].value.modules[0].value.content")).toBe("square");
    expect(moduleAtLocation(flow.value, "value.modules[2].value.branches[0].modules[0]")).toBe("big");
    expect(moduleAtLocation(flow.value, "value.modules[2].value.default[0].id")).toBe("small");
    expect(moduleAtLocation(flow.value, "summary")).toBeNull();
  });
});
