// Render a Braze Liquid template with brazejs, the Braze-compatible engine.
// stdin: {"template": "...", "context": {...}}; stdout: {"output": "..."} or {"aborted": "..."}.
const Liquid = require('brazejs')

let input = ''
process.stdin.on('data', chunk => { input += chunk })
process.stdin.on('end', async () => {
  const { template, context } = JSON.parse(input)
  const engine = new Liquid()
  // Braze has hmac_sha256_hex (its "advanced filters" page); brazejs 1.7 lacks it, so add it as Braze computes it.
  engine.registerFilter('hmac_sha256_hex', (x, key) =>
    require('crypto').createHmac('sha256', String(key)).update(String(x)).digest('hex'))
  try {
    // parse + render (not parseAndRender, which turns an abort into plain output)
    const output = await engine.render(engine.parse(template), context)
    process.stdout.write(JSON.stringify({ output }))
  } catch (err) {
    if (err.name === 'AbortError' || /abort/i.test(String(err.name))) {
      process.stdout.write(JSON.stringify({ aborted: err.message }))
    } else {
      process.stdout.write(JSON.stringify({ error: String(err && err.stack || err) }))
      process.exitCode = 1
    }
  }
})
