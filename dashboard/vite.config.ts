/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// The bundle in dist/ is committed and embedded in the server binary (rust-embed), so a
// Rust build never needs Node; CI rebuilds it from source and fails when the two differ.
export default defineConfig({
  plugins: [react(), tailwindcss()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: { proxy: { "/api": "http://127.0.0.1:9123", "/ws": { target: "ws://127.0.0.1:9123", ws: true }, "/ironflow.v1": "http://127.0.0.1:9123" } },
  test: { environment: "jsdom", include: ["src/**/*.test.{ts,tsx}"] },
});
