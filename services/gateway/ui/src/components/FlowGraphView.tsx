import { Background, Controls, Handle, Position, ReactFlow, type Edge, type Node, type NodeProps } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useMemo } from "react";
import { Link } from "react-router-dom";
import { buildFlowGraph, NODE_WIDTH, type FlowGraph, type GraphNode } from "../lib/flowGraph";
import type { FlowStatus, FlowValue } from "../lib/types";

type StepNode = Node<{ step: GraphNode; flagged: boolean }, "step">;

function StepNodeView({ data }: NodeProps<StepNode>) {
  const step = data.step;
  return (
    <div
      className={`flow-step state-${step.state}${data.flagged ? " flagged" : ""}`}
      data-step={step.id}
      data-state={step.state}
      data-flagged={data.flagged ? "true" : undefined}
      style={{ width: NODE_WIDTH }}
    >
      <Handle type="target" position={Position.Top} />
      <div className="flow-step-title">
        {step.job ? <Link to={`/runs/${step.job}`}>{step.label}</Link> : step.label}
      </div>
      <div className="flow-step-meta">
        <span className="flow-step-kind">{step.kind}</span>
        <span className="flow-step-state">{step.state}</span>
      </div>
      {step.detail && <div className="flow-step-detail">{step.detail}</div>}
      {step.iterations && step.shownIteration != null && (
        <div className="flow-step-shown" data-iteration={step.shownIteration + 1}>
          inside: iteration {step.shownIteration + 1}
        </div>
      )}
      <Handle type="source" position={Position.Bottom} />
    </div>
  );
}

const nodeTypes = { step: StepNodeView };

export interface FlowGraphViewProps {
  flow: FlowValue;
  status?: FlowStatus | null;
  height?: number;
  /** A module to point at (e.g. the one a validation error names). */
  flagged?: string | null;
  /** The graph, when the page built it (with its loop iterations' statuses). */
  graph?: FlowGraph;
}

export function FlowGraphView({ flow, status, height = 480, flagged, graph: built }: FlowGraphViewProps) {
  const { nodes, edges } = useMemo(() => {
    const graph = built ?? buildFlowGraph(flow, status);
    const nodes: StepNode[] = graph.nodes.map((step) => ({
      id: step.id,
      type: "step",
      position: { x: step.x, y: step.y },
      data: { step, flagged: step.id === flagged },
      draggable: false,
      connectable: false,
    }));
    const edges: Edge[] = graph.edges.map((edge) => ({
      id: edge.id,
      source: edge.source,
      target: edge.target,
      label: edge.label,
      animated: false,
    }));
    return { nodes, edges };
  }, [flow, status, flagged, built]);
  return (
    <div className="flow-graph" style={{ height }} data-testid="flow-graph">
      <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} fitView fitViewOptions={{ maxZoom: 1 }} minZoom={0.05} nodesDraggable={false}>
        <Background />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
