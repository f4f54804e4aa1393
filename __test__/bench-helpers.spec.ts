/**
 * The raw addon's machine measurements for `bench/` (not part of the package API, which
 * is `dist/index.js`): the FMA peak, the cache-sensitive layer probe and the pool copy.
 * They must reject bad arguments with a message naming them, and measure something.
 */
import test from 'ava'

import { addon } from '../lib/native/addon'

for (const name of ['peakGflops', 'layerProbeGflops'] as const) {
  test(`${name} rejects a duration that is not an integer in 1..=60000 ms`, (t) => {
    for (const bad of [0, -1, 1.5, 60001, Number.NaN, Number.POSITIVE_INFINITY]) {
      const e = t.throws(() => addon[name](bad))
      t.regex(e?.message ?? '', new RegExp(`${name}: millis must be an integer in 1\\.\\.=60000, got`), String(bad))
    }
    t.throws(() => addon[name]('10' as unknown as number))
  })

  test(`${name} measures a positive, finite rate on 1 and 2 threads`, (t) => {
    const before = addon.getNumThreads()
    try {
      for (const threads of [1, 2]) {
        addon.setNumThreads(threads)
        const g = addon[name](20)
        t.true(Number.isFinite(g) && g > 0, `${threads} thread(s): ${g}`)
      }
    } finally {
      addon.setNumThreads(before)
    }
  })
}

test('copyF32 copies, and rejects a length mismatch or overlapping arrays', (t) => {
  const src = Float32Array.from({ length: 1000 }, (_, i) => i * 0.5 - 3)
  const out = new Float32Array(1000)
  addon.copyF32(src, out)
  t.deepEqual(out, src)
  t.throws(() => addon.copyF32(src, new Float32Array(999)), { message: /out/ })
  const buf = new Float32Array(2000)
  t.throws(() => addon.copyF32(buf.subarray(0, 1000), buf.subarray(500, 1500)), { message: /overlap/ })
})
