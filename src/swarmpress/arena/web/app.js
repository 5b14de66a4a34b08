// swarmpress arena dashboard: plain JS over the JSON API, refreshed every two seconds.
const Arena = (() => {
  const $ = (sel) => document.querySelector(sel);
  const fmt = (v, d = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const when = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);
  const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  async function get(url, key) {
    const headers = key ? { "X-API-Key": key } : {};
    const r = await fetch(url, { headers });
    if (!r.ok) throw new Error((await r.json()).error || r.statusText);
    return r.json();
  }
  let current = null;
  // Why an entry is not ranked, in the words the API gives this viewer (a category to
  // others until the reveal, the detailed reason to its author).
  const why = (s) => (s.state === "failed" ? s.error || "failed" : s.state === "done" && !(s.score > 0) ? "scored 0" : "");

  function drawStaircase(steps) {
    const svg = $("#staircase");
    const W = 640, H = 220, L = 48, R = 12, T = 12, B = 28;
    if (!steps.length) { svg.innerHTML = `<text x="${W / 2 - 60}" y="${H / 2}">no leader yet</text>`; return; }
    const t0 = steps[0].at, t1 = Math.max(Date.now() / 1000, steps[steps.length - 1].at + 1);
    const s1 = Math.max(...steps.map((s) => s.score)) * 1.1 || 1;
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (s) => H - B - (s / s1) * (H - T - B);
    let d = `M ${x(steps[0].at)} ${y(steps[0].score)}`;
    for (let i = 1; i < steps.length; i++) d += ` H ${x(steps[i].at)} V ${y(steps[i].score)}`;
    d += ` H ${x(t1)}`;
    const dots = steps.map((s) => `<circle class="dot" cx="${x(s.at)}" cy="${y(s.score)}" r="3.5"><title>#${s.id}: ${fmt(s.score)}</title></circle>`).join("");
    const ticks = [0, 0.5, 1].map((f) => `<text x="4" y="${y(f * s1) + 4}">${fmt(f * s1, 3)}</text>`).join("");
    svg.innerHTML = `<path class="step" d="${d}"/>${dots}${ticks}<text x="${L}" y="${H - 8}">${when(t0)}</text><text x="${W - 140}" y="${H - 8}">${when(t1)}</text>`;
    svg.dataset.steps = steps.length;
  }

  async function refresh() {
    if (!current) return;
    const [board, steps, recent] = await Promise.all([
      get(`/api/competitions/${current.name}/leaderboard`),
      get(`/api/competitions/${current.name}/staircase`),
      get(`/api/competitions/${current.name}/submissions?limit=20`),
    ]);
    const rows = board.map((e) => `<tr class="${e.leader ? "leader" : ""}" data-id="${e.id}"><td>${e.rank}</td><td><a href="/submissions/${e.id}">#${e.id}</a></td><td>${esc(e.author)}</td><td>${fmt(e.score)}</td><td>${e.parent ? `<a href="/submissions/${e.parent}">#${e.parent}</a>` : ""}</td><td>${when(e.created)}</td></tr>`);
    $("#leaderboard tbody").innerHTML = rows.join("");
    $("#empty").hidden = board.length > 0;
    $("#recent tbody").innerHTML = recent.map((e) => `<tr class="${esc(e.state)}" data-id="${e.id}"><td><a href="/submissions/${e.id}">#${e.id}</a></td><td>${esc(e.author)}</td><td>${esc(e.filename)}</td><td>${esc(e.state)}</td><td>${fmt(e.score)}</td><td class="why">${esc(why(e))}</td><td>${when(e.created)}</td></tr>`).join("");
    drawStaircase(steps);
  }

  function select(c, tabs) {
    current = c;
    tabs.forEach((b) => b.classList.toggle("active", b.dataset.name === c.name));
    $("#about").innerHTML = `<p><b>${esc(c.name)}</b> (${esc(c.track)} track): ${esc(c.description)}. ${c.tensors_per_round} held-out tensors per round; a new leader must beat the top by ${(c.margin * 100).toFixed(1)} %; code is revealed ${c.reveal_delay_seconds} s after submission. Public sample: ${c.public_sample.map((n) => `<a href="/api/competitions/${c.name}/sample/${encodeURIComponent(n)}">${esc(n)}</a>`).join(", ")}.</p>`;
    refresh();
  }

  async function index() {
    const comps = await get("/api/competitions");
    const nav = $("#tabs");
    nav.innerHTML = comps.map((c) => `<button data-name="${esc(c.name)}">${esc(c.name)}</button>`).join(" ");
    const tabs = [...nav.querySelectorAll("button")];
    tabs.forEach((b, i) => (b.onclick = () => select(comps[i], tabs)));
    const wanted = new URLSearchParams(location.search).get("competition");
    select(comps.find((c) => c.name === wanted) || comps[0], tabs);
    setInterval(() => refresh().catch(() => {}), 2000);
    $("#key").value = localStorage.getItem("arenaKey") || "";
    $("#submit").onsubmit = async (ev) => {
      ev.preventDefault();
      const key = $("#key").value;
      localStorage.setItem("arenaKey", key);
      const body = new FormData();
      body.append("file", $("#file").files[0]);
      body.append("competition", current.name);
      if ($("#fork").value) body.append("fork", $("#fork").value);
      const r = await fetch("/api/submissions", { method: "POST", body, headers: { "X-API-Key": key } });
      const out = await r.json();
      $("#submit-result").innerHTML = r.ok ? `queued as <a href="/submissions/${out.id}">#${out.id}</a>` : `<span class="bad">${esc(out.error)}</span>`;
    };
  }

  function tree(node) {
    const kids = node.children.map((c) => `<li>${tree(c)}</li>`).join("");
    return `<a href="/submissions/${node.id}">#${node.id}</a> ${fmt(node.score)}${kids ? `<ul class="tree">${kids}</ul>` : ""}`;
  }

  async function submission() {
    const id = location.pathname.split("/").pop();
    const key = localStorage.getItem("arenaKey");
    async function load() {
      const s = await get(`/api/submissions/${id}`, key);
      $("#summary").innerHTML = `<h2>Submission #${s.id}</h2><p>${esc(s.filename)} by ${esc(s.author)} in <a href="/?competition=${esc(s.competition)}">${esc(s.competition)}</a>; state <b id="state">${esc(s.state)}</b>, score <b>${fmt(s.score)}</b>${s.sandbox ? ` (sandbox: ${esc(s.sandbox)})` : ""}. ${s.parent ? `Fork of <a href="/submissions/${s.parent}">#${s.parent}</a>. ` : ""}${s.children.length ? `Forks: ${s.children.map((c) => `<a href="/submissions/${c}">#${c}</a>`).join(", ")}. ` : ""}${s.revealed ? `<a href="/api/submissions/${s.id}/code">Download code</a>.` : `Code revealed at ${when(s.reveal_at)}.`}</p>`;
      const reason = why(s);
      $("#why").hidden = !reason;
      $("#why").textContent = reason ? `${s.state === "failed" ? "Failed" : "Not ranked"}: ${reason}${s.detailed || s.state !== "failed" ? "" : " (the details open with the code)"}` : "";
      $("#results tbody").innerHTML = s.results.map((r) => `<tr><td>${esc(r.tensor)}</td><td>${r.ok ? "yes" : '<span class="bad">no</span>'}</td><td>${fmt(r.score)}</td><td>${fmt(r.ratio)}</td><td>${fmt(r.similarity, 5)}</td><td>${fmt(r.seconds_compress, 3)}</td><td>${fmt(r.seconds_decompress, 3)}</td><td>${esc(r.reason)}</td></tr>`).join("");
      $("#log").textContent = s.log ?? "(the log is revealed with the code)";
      const lin = await get(`/api/submissions/${id}/lineage`);
      const up = lin.ancestors.map((a) => `<a href="/submissions/${a.id}">#${a.id}</a>`).join(" → ");
      $("#lineage").innerHTML = `${up ? `<p>${up} → #${id}</p>` : ""}<ul class="tree"><li>${tree(lin.tree)}</li></ul>`;
      return s.state;
    }
    const state = await load();
    if (state === "queued" || state === "running") {
      const timer = setInterval(async () => { if (!["queued", "running"].includes(await load())) clearInterval(timer); }, 2000);
    }
  }
  return { index, submission };
})();
