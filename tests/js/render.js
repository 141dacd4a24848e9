// Render a Braze Liquid template with brazejs, the Braze-compatible engine.
// stdin: {"template": "...", "context": {...}}
// stdout: {"output": "...", "retries": n} or {"aborted": "...", "retries": n}.
//
// brazejs makes the real HTTP calls of `connected_content` but knows nothing of `:retry` or
// `:no_cache`; this harness adds them as Braze documents them:
// - `:retry`: a call that fails (5xx, timeout, refused) is retried, up to 5 times; if it still fails the
//   message is aborted (https://www.braze.com/docs/user_guide/messaging/design_and_edit/personalize/
//   connected_content/connected_content_retries/);
// - but "if a Connected Content call uses abort logic for the same condition as the retry logic, the
//   abort logic takes precedence. This prevents any retries" (same page): a render that aborts after
//   a failed `:retry` call is not retried;
// - a 404 renders as an empty answer, a 500/502 "fails with retry logic" (making_an_api_call page);
// - `:no_cache` turns off brazejs's 5-minute GET cache.
const Liquid = require('brazejs')

const MAX_RETRIES = 5

function makeEngine (failures) {
  const engine = new Liquid()
  // Braze has hmac_sha256_hex (its "advanced filters" page); brazejs 1.7 lacks it: add it as Braze
  // computes it.
  engine.registerFilter('hmac_sha256_hex', (x, key) =>
    require('crypto').createHmac('sha256', String(key)).update(String(x)).digest('hex'))
  // brazejs's own connected_content, found through a parsed tag, wrapped to see each call's outcome.
  const original = Object.getPrototypeOf(engine.parse('{% connected_content http://127.0.0.1/ %}')[0].impl)
  engine.registerTag('connected_content', Object.assign(Object.create(original), {
    parse: function (token, tokens) {
      original.parse.call(this, token, tokens)
      if (this.options.no_cache) this.options.cache = '0'
    },
    render: async function (ctx) {
      const save = this.options.save || 'connected'
      delete ctx.environments[save]
      const logged = []
      const consoleError = console.error
      console.error = (...args) => { logged.push(args.join(' ')) }
      let result
      try {
        result = await original.render.call(this, ctx)
      } finally {
        console.error = consoleError
      }
      if (ctx.environments[save] === undefined) {
        const match = logged.join('\n').match(/responded with (\d+|undefined)/)
        const status = match && match[1] !== 'undefined' ? Number(match[1]) : null // null: no answer
        if (this.options.retry && (status === null || status >= 500)) failures.push(status)
      }
      return result
    }
  }))
  return engine
}

async function renderOnce (template, context) {
  const failures = []
  const engine = makeEngine(failures)
  try {
    // parse + render (not parseAndRender, which turns an abort into plain output)
    const output = await engine.render(engine.parse(template), context)
    return { output, failures }
  } catch (err) {
    if (err.name === 'AbortError' || /abort/i.test(String(err.name))) {
      return { aborted: err.message, failures }
    }
    throw err
  }
}

let input = ''
process.stdin.on('data', chunk => { input += chunk })
process.stdin.on('end', async () => {
  const { template, context } = JSON.parse(input)
  try {
    let retries = 0
    while (true) {
      const result = await renderOnce(template, context)
      const failed = result.failures.length > 0
      if (!failed || 'aborted' in result) {
        // success, or an abort: Braze's abort takes precedence over :retry (no retry after it)
        const answer = 'aborted' in result ? { aborted: result.aborted } : { output: result.output }
        process.stdout.write(JSON.stringify({ ...answer, retries }))
        return
      }
      if (retries === MAX_RETRIES) {
        process.stdout.write(JSON.stringify({ aborted: 'connected content failed after 5 retries', retries }))
        return
      }
      retries += 1
    }
  } catch (err) {
    process.stdout.write(JSON.stringify({ error: String(err && err.stack || err) }))
    process.exitCode = 1
  }
})
