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

  it("shows the selected iteration's inner statuses, and the branch's own", () => {
    const status: FlowStatus = {
      step: 2,
      modules: [
        { id: "a", type: "Success", job: "j1" },
        { id: "loop", type: "InProgress", count: 3, progress: 1, flow_jobs: ["it0", "it1"], flow_jobs_success: [true, null] },
        { id: "pick", type: "WaitingForPriorSteps" },
        { id: "ask", type: "WaitingForPriorSteps" },
      ],
    };
    // Iteration statuses not loaded yet: inner steps follow the iteration shown (the latest).
    let graph = buildFlowGraph(FLOW, status);
    const loop = () => graph.nodes.find((n) => n.id === "loop")!;
    const inner = () => graph.nodes.find((n) => n.id === "inner")!;
    expect(loop().iterations).toEqual([
      { job: "it0", state: "success" },
      { job: "it1", state: "running" },
    ]);
    expect(loop().shownIteration).toBe(1);
    expect(inner().state).toBe("running");
    expect(graph.children).toEqual([{ job: "it1", done: false }]);

    const children = new Map<string, FlowStatus>([
      ["it0", { step: 1, modules: [{ id: "inner", type: "Success", job: "in0" }] }],
      ["it1", { step: 0, modules: [{ id: "inner", type: "WaitingForExecutor", job: "in1" }] }],
    ]);
    graph = buildFlowGraph(FLOW, status, { children });
    expect(inner()).toMatchObject({ state: "running", job: "in1" });
    graph = buildFlowGraph(FLOW, status, { children, selected: { loop: 0 } });
    expect(inner()).toMatchObject({ state: "success", job: "in0" });
    expect(loop().shownIteration).toBe(0);
    expect(graph.children).toEqual([{ job: "it0", done: true }]);
    // An out-of-range choice falls back to the latest.
    graph = buildFlowGraph(FLOW, status, { children, selected: { loop: 7 } });
    expect(loop().shownIteration).toBe(1);

    // The branch taken runs as a child flow of its own; the other one is skipped.
    const later: FlowStatus = {
      step: 3,
      modules: [
        { id: "a", type: "Success" },
        { id: "loop", type: "Success", count: 2, progress: 2, flow_jobs: ["it0", "it1"], flow_jobs_success: [true, true] },
        { id: "pick", type: "InProgress", job: "br", branch_chosen: { type: "branch", branch: 0 } },
        { id: "ask", type: "WaitingForPriorSteps" },
      ],
    };
    children.set("br", { step: 0, modules: [{ id: "yes", type: "Failure", job: "y1" }] });
    graph = buildFlowGraph(FLOW, later, { children });
    const state = Object.fromEntries(graph.nodes.map((n) => [n.id, n.state]));
    expect(state).toMatchObject({ pick: "running", yes: "failure", no: "skipped" });
    expect(graph.children).toContainEqual({ job: "br", done: false });
  });

  it("follows nested loops and each branch of a branch-all", () => {
    const nested: FlowValue = {
      modules: [
        {
          id: "outer",
          value: { type: "forloopflow", modules: [{ id: "innerloop", value: { type: "forloopflow", modules: [step("leaf")] } }] },
        },
        { id: "all", value: { type: "branchall", branches: [{ modules: [step("b0")] }, { modules: [step("b1")] }] } },
      ],
    };
    const status: FlowStatus = {
      step: 1,
      modules: [
        { id: "outer", type: "Success", count: 1, progress: 1, flow_jobs: ["o0"], flow_jobs_success: [true] },
        { id: "all", type: "InProgress", count: 2, progress: 1, flow_jobs: ["x0", "x1"], flow_jobs_success: [true, null] },
      ],
    };
    const children = new Map<string, FlowStatus>([
      ["o0", { step: 1, modules: [{ id: "innerloop", type: "Success", count: 2, progress: 2, flow_jobs: ["i0", "i1"], flow_jobs_success: [true, false] }] }],
      ["i0", { step: 1, modules: [{ id: "leaf", type: "Success" }] }],
      ["x0", { step: 1, modules: [{ id: "b0", type: "Success" }] }],
    ]);
    const graph = buildFlowGraph(nested, status, { children, selected: { innerloop: 0 } });
    const state = Object.fromEntries(graph.nodes.map((n) => [n.id, n.state]));
    expect(state).toEqual({ outer: "success", innerloop: "success", leaf: "success", all: "running", b0: "success", b1: "running" });
    expect(graph.children.map((c) => c.job)).toEqual(["o0", "i0", "x0", "x1"]);
    expect(graph.nodes.find((n) => n.id === "innerloop")!.iterations!.map((i) => i.state)).toEqual(["success", "failure"]);
  });
});
