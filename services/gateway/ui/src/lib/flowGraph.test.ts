import { describe, expect, it } from "vitest";
import { buildFlowGraph, suspendedSteps } from "./flowGraph";
import type { FlowModule, FlowStatus, FlowValue } from "./types";

const step = (id: string): FlowModule => ({ id, value: { type: "rawscript", language: "python3", content: "" } });

const FLOW: FlowValue = {
  modules: [
    step("a"),
    { id: "loop", value: { type: "forloopflow", modules: [step("inner")] } },
    {
      id: "pick",
      value: {
        type: "branchone",
        branches: [{ summary: "big", expr: "x > 1", modules: [step("yes")] }],
        default: [step("no")],
      },
    },
    { ...step("ask"), suspend: { required_events: 1 } },
  ],
};

describe("buildFlowGraph", () => {
  it("lays out every module with edges in order, into loops and branches", () => {
    const graph = buildFlowGraph(FLOW, null);
    expect(graph.nodes.map((n) => n.id)).toEqual(["a", "loop", "inner", "pick", "yes", "no", "ask"]);
    expect(graph.nodes.every((n) => n.state === "waiting")).toBe(true);
    const edges = graph.edges.map((e) => [e.source, e.target, e.label ?? ""].join(" "));
    expect(edges.sort()).toEqual(
      [
      ["a", "loop", ""],
      ["loop", "inner", "each"],
      ["inner", "pick", ""],
      ["pick", "yes", "big"],
      ["pick", "no", "default"],
      ["yes", "ask", ""],
      ["no", "ask", ""],
      ]
        .map((e) => e.join(" "))
        .sort(),
    );
    const positions = new Set(graph.nodes.map((n) => `${n.x},${n.y}`));
    expect(positions.size).toBe(graph.nodes.length);
  });

  it("colours steps from flow_status: loops, the branch taken, approvals", () => {
    const status: FlowStatus = {
      step: 3,
      modules: [
        { id: "a", type: "Success", job: "j1" },
        { id: "loop", type: "Success", count: 3, progress: 3, flow_jobs: ["x", "y", "z"] },
        { id: "pick", type: "Success", branch_chosen: { type: "default" } },
        { id: "ask", type: "WaitingForEvents", job: "j4" },
      ],
    };
    const graph = buildFlowGraph(FLOW, status);
    const state = Object.fromEntries(graph.nodes.map((n) => [n.id, n.state]));
    expect(state).toEqual({
      a: "success",
      loop: "success",
      inner: "success",
      pick: "success",
      yes: "skipped",
      no: "success",
      ask: "suspended",
    });
    const detail = Object.fromEntries(graph.nodes.map((n) => [n.id, n.detail]));
    expect(detail.loop).toBe("3/3 iterations");
    expect(detail.pick).toBe("default branch taken");
    expect(detail.ask).toBe("waiting for approval");
    expect(graph.nodes.find((n) => n.id === "a")!.job).toBe("j1");
    expect(suspendedSteps(status)).toEqual([{ id: "ask", job: "j4" }]);
  });

  it("lays out a long flow in linear time", () => {
    const big: FlowValue = { modules: Array.from({ length: 2000 }, (_, i) => step(`s${i}`)) };
    const graph = buildFlowGraph(big, null);
    expect(graph.nodes).toHaveLength(2000);
    expect(graph.edges).toHaveLength(1999);
  });
});
