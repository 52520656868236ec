// The console's script, served as /console.js: the Content-Security-Policy allows no inline
// script (DECISIONS.md, "Console security headers").
const api = (path, opts = {}) => fetch('/api/v1' + path, {credentials: 'same-origin', headers: {'Content-Type': 'application/json'}, ...opts})
  .then(async r => ({status: r.status, body: await r.json().catch(() => ({}))}));
function cell(text) { const td = document.createElement('td'); td.textContent = text; return td; }
async function refresh() {
  const me = await api('/me');
  if (me.status !== 200) { document.getElementById('who').textContent = 'Not signed in.'; return; }
  document.getElementById('who').textContent = 'Signed in as ' + me.body.user.email;
  const r = await api('/intents?status=pending_approval');
  const tbody = document.getElementById('holds'); tbody.replaceChildren();
  for (const i of (r.body.data || [])) {
    const tr = document.createElement('tr');
    tr.append(cell(i.id), cell(i.agent), cell(i.operation), cell((i.amount ?? '') + ' ' + (i.currency ?? '')), cell(i.reason));
    const td = document.createElement('td');
    for (const verb of ['approve', 'deny']) {
      const b = document.createElement('button'); b.textContent = verb; b.dataset.intent = i.id;
      // One Idempotency-Key per button: a double click decides once (ADMIN_API.md).
      const key = Array.from(crypto.getRandomValues(new Uint8Array(16)), x => x.toString(16).padStart(2, '0')).join('');
      b.onclick = async () => {
        const send = body => api('/intents/' + i.id + '/' + verb, {method: 'POST', body: JSON.stringify(body), headers: {'Content-Type': 'application/json', 'Idempotency-Key': key}});
        let r = await send({});
        if (r.body.error?.code === 'step_up_required') {
          // The organization wants a fresh TOTP code with every decision (step-up).
          const code = window.prompt('Current authenticator code');
          if (code) r = await send({totp_code: code});
        }
        if (r.status !== 200) document.getElementById('who').textContent = verb + ' failed: ' + (r.body.error?.message || r.status);
        refresh();
      };
      td.append(b);
    }
    tr.append(td); tbody.append(tr);
  }
}
document.getElementById('login').onsubmit = async e => {
  e.preventDefault();
  const body = {email: email.value, password: password.value};
  if (totp.value) body.totp_code = totp.value;
  const r = await api('/auth/login', {method: 'POST', body: JSON.stringify(body)});
  if (r.status !== 200) document.getElementById('who').textContent = 'Sign-in failed: ' + (r.body.error?.message || r.status);
  refresh();
};
refresh();
