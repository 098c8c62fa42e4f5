/// <reference types="vitest" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The gateway serves the build from its package (gristmill/gateway/static/ui).
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../src/gristmill/gateway/static/ui",
    emptyOutDir: true,
    chunkSizeWarningLimit: 4000,
  },
  server: {
    proxy: { "/api": process.env.GRISTMILL_URL ?? "http://127.0.0.1:8000" },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
