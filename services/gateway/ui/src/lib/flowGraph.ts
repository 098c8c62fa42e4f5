// A flow's modules as a graph (nodes with positions, edges) coloured by the run's
// flow_status. Pure, so it is tested without a browser and stays fast for big flows.

import type { FlowModule, FlowModuleStatus, FlowStatus, FlowValue } from "./types";

export type StepState = "waiting" | "running" | "suspended" | "success" | "failure" | "skipped";

export interface GraphNode {
  id: string;
  label: string;
  /** The module's type: rawscript, script, flow, forloopflow, branchone, ... */
  kind: string;
  state: StepState;
  /** Loop progress, branch taken, approvals. */
  detail?: string;
  /** The step's job (top-level steps of a run). */
  job?: string;
  x: number;
  y: number;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  label?: string;
}

export interface FlowGraph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export const NODE_WIDTH = 200;
export const NODE_HEIGHT = 54;
const ROW = 90;
const COLUMN = 240;

const STATES: Record<string, StepState> = {
  WaitingForPriorSteps: "waiting",
  WaitingForEvents: "suspended",
  WaitingForExecutor: "running",
  InProgress: "running",
  Success: "success",
  Failure: "failure",
};

export function stepState(status: FlowModuleStatus | undefined): StepState {
  if (!status) return "waiting";
  if (status.skipped) return "skipped";
  return STATES[status.type] ?? "waiting";
}

/** The state inner steps of a container take from it. */
function innerState(container: StepState): StepState {
  if (container === "suspended") return "running";
  return container;
}

function detailOf(module: FlowModule, status: FlowModuleStatus | undefined): string | undefined {
  const type = module.value.type;
  if ((type === "forloopflow" || type === "whileloopflow") && status && status.count != null) {
    return `${status.progress ?? 0}/${status.count} iterations`;
  }
  if (type === "branchone" && status?.branch_chosen) {
    const chosen = status.branch_chosen;
    return chosen.type === "default" ? "default branch taken" : `branch ${chosen.branch + 1} taken`;
  }
  if (module.suspend && status?.type === "WaitingForEvents") return "waiting for approval";
  if (status?.approvers && status.approvers.length > 0) {
    return `approved by ${status.approvers.map((a) => a.approver).join(", ")}`;
  }
  return undefined;
}

interface Placed {
  /** Ids that lead into the sequence / out of it. */
  entry: string | null;
  exits: string[];
  height: number;
  width: number;
}

class Builder {
  nodes: GraphNode[] = [];
  edges: GraphEdge[] = [];
  private byId: Map<string, FlowModuleStatus>;

  constructor(status: FlowStatus | null | undefined) {
    this.byId = new Map((status?.modules ?? []).map((m) => [m.id, m]));
  }

  edge(source: string, target: string, label?: string): void {
    this.edges.push({ id: `${source}->${target}`, source, target, label });
  }

  /** Lay out ``modules`` one under the other from (x, y); ``inherited`` colours inner steps. */
  sequence(modules: FlowModule[], x: number, y: number, inherited: StepState | null): Placed {
    let entry: string | null = null;
    let exits: string[] = [];
    let height = 0;
    let width = COLUMN;
    for (const module of modules) {
      const placed = this.module(module, x, y + height, inherited);
      if (entry === null) entry = placed.entry;
      for (const exit of exits) if (placed.entry) this.edge(exit, placed.entry);
      exits = placed.exits;
      height += placed.height;
      width = Math.max(width, placed.width);
    }
    return { entry, exits, height, width };
  }

  module(module: FlowModule, x: number, y: number, inherited: StepState | null): Placed {
    const status = inherited === null ? this.byId.get(module.id) : undefined;
    const state = inherited ?? stepState(status);
    const type = module.value.type;
    this.nodes.push({
      id: module.id,
      label: module.summary ? `${module.id}: ${module.summary}` : module.id,
      kind: type,
      state,
      detail: inherited === null ? detailOf(module, status) : undefined,
      job: status?.job,
      x,
      y,
    });
    if (type === "forloopflow" || type === "whileloopflow") {
      const body = this.sequence(module.value.modules ?? [], x + 40, y + ROW, inner(state));
      if (body.entry) this.edge(module.id, body.entry, "each");
      return {
        entry: module.id,
        exits: body.exits.length > 0 ? body.exits : [module.id],
        height: ROW + body.height,
        width: 40 + body.width,
      };
    }
    if (type === "branchone" || type === "branchall") {
      const branches = [
        ...(module.value.branches ?? []).map((b, i) => ({
          label: b.summary || (type === "branchone" ? b.expr || `branch ${i + 1}` : `branch ${i + 1}`),
          modules: b.modules,
          index: i,
        })),
      ];
      if (type === "branchone") {
        branches.push({ label: "default", modules: module.value.default ?? [], index: -1 });
      }
      const chosen = status?.branch_chosen;
      let height = 0;
      let width = 0;
      const exits: string[] = [];
      branches.forEach((branch, column) => {
        let branchState = inner(state);
        if (type === "branchone" && chosen) {
          const taken = chosen.type === "default" ? -1 : chosen.branch;
          if (taken !== branch.index) branchState = "skipped";
        }
        const placed = this.sequence(branch.modules, x + column * COLUMN, y + ROW, branchState);
        if (placed.entry) {
          this.edge(module.id, placed.entry, branch.label);
          exits.push(...placed.exits);
        } else {
          exits.push(module.id);
        }
        height = Math.max(height, placed.height);
        width += COLUMN;
      });
      return { entry: module.id, exits: [...new Set(exits)], height: ROW + height, width };
    }
    return { entry: module.id, exits: [module.id], height: ROW, width: COLUMN };
  }
}

function inner(state: StepState): StepState {
  return innerState(state);
}

/** The graph of ``flow`` coloured by ``status`` (``null``: not run, every step waiting). */
export function buildFlowGraph(flow: FlowValue, status?: FlowStatus | null): FlowGraph {
  const builder = new Builder(status);
  builder.sequence(flow.modules ?? [], 0, 0, null);
  return { nodes: builder.nodes, edges: builder.edges };
}

/** Top-level steps waiting for an approval, with their job (what the buttons act on). */
export function suspendedSteps(status: FlowStatus | null | undefined): { id: string; job: string }[] {
  return (status?.modules ?? [])
    .filter((m) => m.type === "WaitingForEvents" && m.job)
    .map((m) => ({ id: m.id, job: m.job! }));
}
