import { useState } from "react";
import { apiJson, setSession } from "../lib/api";
import { ErrorBox } from "../components/common";

export function SignInPage({ onSignedIn }: { onSignedIn: () => void }) {
  const [token, setToken] = useState("");
  const [space, setSpace] = useState(() => localStorage.getItem("gristmill.workspace") || "main");
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event?: React.FormEvent) => {
    event?.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await apiJson(`/api/w/${encodeURIComponent(space)}/users/whoami`, { token: token.trim() });
      setSession(token.trim(), space);
      onSignedIn();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="sign-in">
      <form onSubmit={submit} className="card">
        <h1>Gristmill</h1>
        <p className="hint">Sign in with an API token (the admin token printed by <code>gristmill up</code>, or one you created).</p>
        <label>
          Token
          <input name="token" type="password" autoFocus value={token} onChange={(e) => setToken(e.target.value)} required />
        </label>
        <label>
          Workspace
          <input name="workspace" value={space} onChange={(e) => setSpace(e.target.value)} required />
        </label>
        <ErrorBox error={error} />
        <button className="primary" type="submit" disabled={busy || !token.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </div>
  );
}
