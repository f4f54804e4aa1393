// A grouped bar chart as a standalone SVG string: no dependency, readable on GitHub in
// light and dark themes (opaque white background), values printed above the bars so
// that a small bar (the pure-JS backend) still reads.

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** 1, 2, 5 × 10^k: a tick step giving about `target` ticks up to `max`. */
function niceStep(max, target = 6) {
  const raw = max / target
  const p = 10 ** Math.floor(Math.log10(raw))
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw)
}

function fmt(v) {
  if (v >= 100) return v.toFixed(0)
  if (v >= 10) return v.toFixed(1)
  if (v >= 1) return v.toFixed(2)
  return v.toPrecision(2)
}

/**
 * @param {object} o
 * @param {string} o.title
 * @param {string[]} [o.subtitle] lines under the title
 * @param {string} o.yLabel
 * @param {{label: string, sublabel?: string}[]} o.groups one cluster of bars each
 * @param {{name: string, color: string, values: (number|null)[]}[]} o.series one bar per group each; null = no bar
 * @returns {string} the SVG document
 */
export function groupedBarsSvg({ title, subtitle = [], yLabel, groups, series }) {
  const barW = 22
  const gap = 26
  const groupW = series.length * barW + gap
  const left = 70
  const right = 20
  const top = 58 + 16 * subtitle.length
  const plotH = 300
  const bottom = 70
  const width = Math.max(640, left + groups.length * groupW + right)
  const height = top + plotH + bottom
  const max = Math.max(1e-9, ...series.flatMap((s) => s.values.filter((v) => v != null)))
  const step = niceStep(max)
  const yMax = Math.ceil((max * 1.08) / step) * step
  const y = (v) => top + plotH - (v / yMax) * plotH

  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`)
  out.push(`<text x="${left}" y="24" font-size="16" font-weight="bold" fill="#222">${esc(title)}</text>`)
  subtitle.forEach((line, i) => out.push(`<text x="${left}" y="${42 + 16 * i}" fill="#555">${esc(line)}</text>`))

  // Grid and y axis.
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    const yy = y(v).toFixed(1)
    out.push(`<line x1="${left}" x2="${width - right}" y1="${yy}" y2="${yy}" stroke="${v === 0 ? '#444' : '#e3e3e3'}"/>`)
    const label = step >= 1 ? v.toFixed(0) : v.toFixed(Math.ceil(-Math.log10(step)))
    out.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#444">${esc(label)}</text>`)
  }
  const midY = top + plotH / 2
  out.push(`<text transform="translate(18 ${midY}) rotate(-90)" text-anchor="middle" fill="#444">${esc(yLabel)}</text>`)

  // Bars.
  groups.forEach((g, gi) => {
    const x0 = left + gap / 2 + gi * groupW
    series.forEach((s, si) => {
      const v = s.values[gi]
      if (v == null) return
      const x = x0 + si * barW
      const yy = y(v)
      out.push(`<rect x="${x}" y="${yy.toFixed(1)}" width="${barW - 3}" height="${(top + plotH - yy).toFixed(1)}" fill="${s.color}"><title>${esc(`${s.name}, ${g.label} ${g.sublabel ?? ''}: ${fmt(v)}`)}</title></rect>`)
      out.push(`<text x="${x + (barW - 3) / 2}" y="${(yy - 4).toFixed(1)}" text-anchor="middle" font-size="9" fill="#333">${esc(fmt(v))}</text>`)
    })
    const cx = x0 + (series.length * barW) / 2
    out.push(`<text x="${cx}" y="${top + plotH + 18}" text-anchor="middle" fill="#222">${esc(g.label)}</text>`)
    if (g.sublabel) out.push(`<text x="${cx}" y="${top + plotH + 33}" text-anchor="middle" fill="#666">${esc(g.sublabel)}</text>`)
  })

  // Legend.
  let lx = left
  const ly = height - 16
  for (const s of series) {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${s.color}"/>`)
    out.push(`<text x="${lx + 17}" y="${ly}" fill="#222">${esc(s.name)}</text>`)
    lx += 30 + 7 * s.name.length
  }
  out.push('</svg>')
  return out.join('\n') + '\n'
}
