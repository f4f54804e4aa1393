/**
 * Loads the N-API addon built by `napi build` (the generated `index.js` at the package
 * root picks the binary for this platform). Kept in one place so that every native
 * module shares one instance and one error message when the binary is missing.
 * @internal
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const addon: typeof import('../../index') = require('../../index.js')
