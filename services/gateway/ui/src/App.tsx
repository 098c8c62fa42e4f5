import { lazy, Suspense, useEffect, useState } from "react";
import { NavLink, Route, Routes, useLocation, useNavigate } from "react-router-dom";
import { clearSession, getToken, workspace } from "./lib/api";
import { Loading } from "./components/common";
import { HomePage } from "./pages/HomePage";
import { RunsPage } from "./pages/RunsPage";
import { SignInPage } from "./pages/SignInPage";

// Pages with the editor, the form library or the graph load on first use, so that the
// lists (home, runs) do not wait for them.
const FlowEditorPage = lazy(() => import("./pages/FlowEditorPage").then((m) => ({ default: m.FlowEditorPage })));
const FlowsPage = lazy(() => import("./pages/FlowsPage").then((m) => ({ default: m.FlowsPage })));
const JobPage = lazy(() => import("./pages/JobPage").then((m) => ({ default: m.JobPage })));
const ResourcesPage = lazy(() => import("./pages/ResourcesPage").then((m) => ({ default: m.ResourcesPage })));
const SchedulesPage = lazy(() => import("./pages/SchedulesPage").then((m) => ({ default: m.SchedulesPage })));
const ScriptEditorPage = lazy(() => import("./pages/ScriptEditorPage").then((m) => ({ default: m.ScriptEditorPage })));
const ScriptPage = lazy(() => import("./pages/ScriptPage").then((m) => ({ default: m.ScriptPage })));
const ScriptsPage = lazy(() => import("./pages/ScriptsPage").then((m) => ({ default: m.ScriptsPage })));
const TriggersPage = lazy(() => import("./pages/TriggersPage").then((m) => ({ default: m.TriggersPage })));
const VariablesPage = lazy(() => import("./pages/VariablesPage").then((m) => ({ default: m.VariablesPage })));
const WorkersPage = lazy(() => import("./pages/WorkersPage").then((m) => ({ default: m.WorkersPage })));

const NAV = [
  ["/", "Home"],
  ["/scripts", "Scripts"],
  ["/flows", "Flows"],
  ["/runs", "Runs"],
  ["/schedules", "Schedules"],
  ["/triggers", "Triggers"],
  ["/variables", "Variables"],
  ["/resources", "Resources"],
  ["/workers", "Workers"],
] as const;

function NotFound() {
  return (
    <div className="page">
      <h1>Not found</h1>
      <p>No page here.</p>
    </div>
  );
}

export function App() {
  const [signedIn, setSignedIn] = useState(() => getToken() !== null);
  const navigate = useNavigate();
  const location = useLocation();
  useEffect(() => {
    const onUnauthorized = () => {
      clearSession();
      setSignedIn(false);
    };
    window.addEventListener("gristmill:unauthorized", onUnauthorized);
    return () => window.removeEventListener("gristmill:unauthorized", onUnauthorized);
  }, []);
  if (!signedIn) {
    return <SignInPage onSignedIn={() => setSignedIn(true)} />;
  }
  return (
    <div className="layout">
      <nav className="sidebar">
        <div className="brand">Gristmill</div>
        <div className="workspace" title="workspace">{workspace()}</div>
        {NAV.map(([to, label]) => (
          <NavLink key={to} to={to} end={to === "/"} className={({ isActive }) => (isActive ? "active" : "")}>
            {label}
          </NavLink>
        ))}
        <button
          className="link sign-out"
          onClick={() => {
            clearSession();
            setSignedIn(false);
            navigate("/");
          }}
        >
          Sign out
        </button>
      </nav>
      <main className="content" key={location.pathname}>
        <Suspense fallback={<Loading />}>
          <Routes>
            <Route path="/" element={<HomePage />} />
            <Route path="/scripts" element={<ScriptsPage />} />
            <Route path="/scripts/new" element={<ScriptEditorPage />} />
            <Route path="/scripts/edit/*" element={<ScriptEditorPage />} />
            <Route path="/scripts/get/*" element={<ScriptPage />} />
            <Route path="/flows" element={<FlowsPage />} />
            <Route path="/flows/new" element={<FlowEditorPage />} />
            <Route path="/flows/get/*" element={<FlowEditorPage />} />
            <Route path="/runs" element={<RunsPage />} />
            <Route path="/runs/:id" element={<JobPage />} />
            <Route path="/schedules" element={<SchedulesPage />} />
            <Route path="/triggers" element={<TriggersPage />} />
            <Route path="/variables" element={<VariablesPage />} />
            <Route path="/resources" element={<ResourcesPage />} />
            <Route path="/workers" element={<WorkersPage />} />
            <Route path="*" element={<NotFound />} />
          </Routes>
        </Suspense>
      </main>
    </div>
  );
}
