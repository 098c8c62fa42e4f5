# Sourced by scripts/up and scripts/test: make sure uv is available on a fresh machine.
if ! command -v uv >/dev/null 2>&1; then
    for candidate in "$HOME/.local/bin" "$HOME/.cargo/bin"; do
        if [ -x "$candidate/uv" ]; then export PATH="$candidate:$PATH"; fi
    done
fi
if ! command -v uv >/dev/null 2>&1; then
    echo "Installing uv (the Python package manager) from PyPI..." >&2
    python3 -m pip install --quiet --user uv 2>/dev/null \
        || python3 -m pip install --quiet --user --break-system-packages uv 2>/dev/null \
        || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
    hash -r
fi
