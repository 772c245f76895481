// Lint configuration: typescript-eslint's recommended type-aware rules over src, test and bench.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  // examples/ are guest programs (they run inside a sandbox), not project code.
  { ignores: ["dist/**", "node_modules/**", "bench/results/**", "examples/**", "clients/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-eval": "error",
      "no-new-func": "error",
    },
  },
  // node:test's describe/it return promises the runner itself awaits.
  { files: ["test/**/*.ts"], rules: { "@typescript-eslint/no-floating-promises": "off" } },
  // Guest-side code (run inside QuickJS, read as text by the worker): a plain script.
  { files: ["src/**/*.guest.js"], languageOptions: { sourceType: "script" } },
  { files: ["bin/**/*.js", "eslint.config.js"], languageOptions: { globals: { process: "readonly", console: "readonly" } } },
  // Measurement probes (plain Node scripts, not part of npm run bench).
  { files: ["bench/probes/**/*.mjs"], languageOptions: { globals: { process: "readonly", console: "readonly", performance: "readonly", setTimeout: "readonly", WebAssembly: "readonly", SharedArrayBuffer: "readonly", Atomics: "readonly", URL: "readonly", Buffer: "readonly", gc: "readonly", globalThis: "readonly" } } },
);
