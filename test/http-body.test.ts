// serve() on Node over real sockets: a route reads the body through readJson (from the socket, up to its limit) or
// through the web Request's own methods (json, text, arrayBuffer, body, clone), and gets the same bytes either way;
// a json() answer is written as Response.json's would be, whether or not anything touched it first.
import * as assert from "uvu/assert"
import { connect } from "node:net"
import { readJson, type Server, serve } from "../mesh/http.ts"
import { json } from "../mesh/lazy-web.ts"
import { suite } from "./harness.ts"

const test = suite("http body")
let server: Server
let base = ""

const answer = async (read: () => Promise<unknown>) => {
  try {
    return Response.json({ got: await read() })
  } catch (err) {
    const status = (err as { status?: number }).status ?? 500
    return Response.json({ error: (err as Error).message }, { status })
  }
}

test.before(async () => {
  server = await serve(
    (request) => {
      const path = new URL(request.url).pathname
      if (path === "/readJson") return answer(() => readJson(request, 64))
      if (path === "/json") return answer(() => request.json())
      if (path === "/text") return answer(() => request.text())
      if (path === "/bytes") return answer(async () => new Uint8Array(await request.arrayBuffer()).length)
      if (path === "/stream") return answer(async () => new Response(request.body).text())
      if (path === "/clone") return answer(async () => [await request.clone().text(), await request.text()])
      if (path === "/twice") return answer(async () => [await request.text(), await readJson(request)])
      if (path === "/meta")
        return answer(async () => [
          request.method,
          request.url,
          request.headers.get("x-truck"),
          request.signal.aborted,
          request.body === null,
          request.redirect,
        ])
      if (path === "/json-answer") return json({ truckId: "truck-7", n: 1 }, { status: 202, headers: { "Idempotency-Key": "k-1" } })
      if (path === "/json-touched") {
        const r = json({ truckId: "truck-7", n: 1 }, { status: 202, headers: { "Idempotency-Key": "k-1" } })
        r.headers.set("x-extra", "yes")
        return r
      }
      if (path === "/web-answer") return Response.json({ truckId: "truck-7", n: 1 }, { status: 202, headers: { "Idempotency-Key": "k-1" } })
      if (path === "/used") return answer(async () => [request.bodyUsed, await request.text(), request.bodyUsed])
      return new Response("not found", { status: 404 })
    },
    { port: 0, hostname: "127.0.0.1" },
  )
  base = `http://127.0.0.1:${server.port}`
})
test.after(() => server.close())

const post = async (path: string, body: string) => {
  const res = await fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body })
  return { status: res.status, body: (await res.json()) as { got?: unknown; error?: string } }
}

test("readJson and the Request's own methods read the same body", async () => {
  const body = JSON.stringify({ truckId: "truck-7", stops: [1, 2, 3] })
  assert.equal(await post("/readJson", body), { status: 200, body: { got: { truckId: "truck-7", stops: [1, 2, 3] } } })
  assert.equal(await post("/json", body), { status: 200, body: { got: { truckId: "truck-7", stops: [1, 2, 3] } } })
  assert.equal(await post("/text", body), { status: 200, body: { got: body } })
  assert.equal(await post("/bytes", body), { status: 200, body: { got: body.length } })
  assert.equal(await post("/stream", body), { status: 200, body: { got: body } })
  assert.equal(await post("/clone", body), { status: 200, body: { got: [body, body] } })
  assert.equal(await post("/used", body), { status: 200, body: { got: [false, body, true] } })
})

test("a route sees the Request's method, url, headers and the rest of its members, with or without a body", async () => {
  const get = await fetch(`${base}/meta?x=1`, { headers: { "x-truck": "truck-7" } })
  assert.equal(await get.json(), { got: ["GET", "http://localhost/meta?x=1", "truck-7", false, true, "follow"] })
  const put = await fetch(`${base}/meta`, { method: "PUT", headers: { "x-truck": "t" }, body: "{}" })
  assert.equal(await put.json(), { got: ["PUT", "http://localhost/meta", "t", false, false, "follow"] })
})

/** the raw bytes of one answer, the Date header blanked */
const rawAnswer = (method: string, path: string) =>
  new Promise<string>((resolve, reject) => {
    const c = connect(server.port, "127.0.0.1", () => c.write(`${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`))
    let got = ""
    c.on("data", (b) => (got += b))
    c.on("end", () => resolve(got.replace(/\r\nDate: [^\r]+/, "")))
    c.on("error", reject)
  })

test("a json() answer goes out as Response.json's does: status, headers, length, body", async () => {
  const body = '{"truckId":"truck-7","n":1}'
  const head = "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nidempotency-key: k-1\r\n"
  const tail = `content-length: ${body.length}\r\nConnection: close\r\n\r\n`
  assert.is(await rawAnswer("GET", "/json-answer"), `${head}${tail}${body}`)
  assert.is(await rawAnswer("GET", "/web-answer"), `${head}${tail}${body}`)
  assert.is(await rawAnswer("GET", "/json-touched"), `${head}x-extra: yes\r\n${tail}${body}`)
  assert.is(await rawAnswer("HEAD", "/json-answer"), `${head}${tail}`)
})

test("json() is a Response to whoever holds it: its members, clone() and its refusals are Response.json's", async () => {
  const r = json({ a: [1, 2] }, { status: 201, headers: { "x-k": "v" } })
  assert.ok(r instanceof Response)
  assert.is(r.status, 201)
  assert.is(r.ok, true)
  assert.is(r.headers.get("content-type"), "application/json")
  assert.is(r.headers.get("x-k"), "v")
  assert.equal(await r.clone().json(), { a: [1, 2] })
  assert.is(await r.text(), '{"a":[1,2]}')
  assert.is(r.bodyUsed, true)
  assert.throws(
    () => json({}, { status: 600 }),
    (e: Error) => e instanceof RangeError,
  )
  assert.throws(
    () => Response.json({}, { status: 600 }),
    (e: Error) => e instanceof RangeError,
  )
})

test("readJson's limit: 413 past it; a body is read once, a second read is refused", async () => {
  const big = JSON.stringify({ pad: "x".repeat(100) })
  const res = await fetch(`${base}/readJson`, { method: "POST", headers: { "content-type": "application/json" }, body: big })
  assert.is(res.status, 413)
  assert.match(((await res.json()) as { error: string }).error, /64-byte limit/)
  const twice = await post("/twice", "{}")
  assert.is(twice.status, 400)
  assert.match(twice.body.error!, /could not be read/)
  // the connection still serves the next request after each
  assert.equal(await post("/readJson", '{"a":1}'), { status: 200, body: { got: { a: 1 } } })
})

test.run()
