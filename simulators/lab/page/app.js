// The lab's page: plain DOM, the control API (openapi.yaml) and its event stream (SSE). No build step.

const state = { people: [], devices: new Map() };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'onclick') e.addEventListener('click', v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  const j = await r.json();
  if (!r.ok) throw new Error(`${j.error.code}: ${j.error.message}`);
  return j;
}

function act(button, fn) {
  return async () => {
    button.disabled = true;
    try {
      const r = await fn();
      button.title = JSON.stringify(r).slice(0, 300);
      if (r && r.outcome) button.dataset.outcome = r.outcome;
      if (r && r.device) renderState(r.device);
    } catch (err) {
      button.title = String(err.message);
      button.dataset.outcome = 'error';
      $('status').textContent = String(err.message);
    } finally {
      button.disabled = false;
    }
  };
}

function traitsFor(person, method) {
  return person.traits.includes(method);
}

function renderDevice(d) {
  const box = el('section', { class: 'device', id: `device-${d.name}`, 'data-device': d.name });
  box.append(el('h2', {}, d.name, ' ', el('small', {}, `${d.kind} · org ${d.org}`)));
  box.append(el('div', { class: 'state', id: `state-${d.name}` }));
  box.append(el('ul', { class: 'peripherals', id: `peripherals-${d.name}` }));
  const people = el('div', { class: 'people' });
  for (const p of state.people) {
    if (!d.servedOrgs.includes(p.org)) continue;
    for (const m of d.methods) {
      if (!traitsFor(p, m)) continue;
      const b = el('button', { type: 'button', 'data-testid': `punch-${d.name}-${p.id}-${m}` }, `${p.id} · ${m}`);
      b.addEventListener(
        'click',
        act(b, () => api('POST', `/api/devices/${d.name}/present`, { person: p.id, method: m })),
      );
      people.append(b);
    }
  }
  box.append(people);
  const faults = el('div', { class: 'faults' });
  const fault = (testid, label, fn) => {
    const b = el('button', { type: 'button', 'data-testid': testid }, label);
    b.addEventListener('click', act(b, fn));
    faults.append(b);
  };
  fault(`uplink-cut-${d.name}`, 'cut uplink', () => api('POST', `/api/devices/${d.name}/uplink`, { mode: 'cut' }));
  fault(`uplink-blackhole-${d.name}`, 'black-hole uplink', () => api('POST', `/api/devices/${d.name}/uplink`, { mode: 'blackhole' }));
  fault(`uplink-restore-${d.name}`, 'restore uplink', () => api('POST', `/api/devices/${d.name}/uplink`, { mode: 'ok' }));
  for (const p of d.peripherals.filter((x) => !x.name.includes(':') && !x.name.startsWith('wifi-'))) {
    fault(`unplug-${d.name}-${p.name}`, `unplug ${p.name}`, () => api('POST', `/api/devices/${d.name}/peripherals/${p.name}`, { plugged: false }));
    fault(`replug-${d.name}-${p.name}`, `replug ${p.name}`, () => api('POST', `/api/devices/${d.name}/peripherals/${p.name}`, { plugged: true }));
  }
  if (d.printer) {
    // A print box: print jobs (a generated document, inline or fetched over HTTPS) and printer faults.
    const print = (source, label) => {
      const b = el('button', { type: 'button', 'data-testid': `print-${source}-${d.name}` }, label);
      b.addEventListener(
        'click',
        act(b, async () => {
          const r = await api('POST', `/api/devices/${d.name}/print-jobs`, { source, pages: source === 'fetch' ? 20 : 2 });
          // The job's events may already have brought a newer view of it.
          if (!document.getElementById(`job-${r.job.jobId}`)) addPrintJob({ deviceId: d.name, ...r.job });
          return { outcome: r.result.code === 'RESULT_CODE_OK' ? 'queued' : r.result.reason, ...r };
        }),
      );
      people.append(b);
    };
    print('inline', 'print a job (inline)');
    print('fetch', 'print a job (fetched over HTTPS)');
    const printer = (testid, label, body) => fault(testid, label, () => api('POST', `/api/devices/${d.name}/printer`, body));
    printer(`printer-offline-${d.name}`, 'printer offline', { fault: 'offline', on: true });
    printer(`printer-online-${d.name}`, 'printer online', { fault: 'offline', on: false });
    printer(`paper-out-${d.name}`, 'paper out (next job)', { fault: 'paper-out', on: true });
    printer(`paper-in-${d.name}`, 'load paper', { fault: 'paper-out', on: false });
  }
  fault(`kill-${d.name}`, 'kill agent', () => api('POST', `/api/devices/${d.name}/agent/kill`));
  fault(`restart-${d.name}`, 'restart agent', () => api('POST', `/api/devices/${d.name}/agent/restart`));
  fault(`disk-fill-${d.name}`, 'fill disk', () => api('POST', `/api/devices/${d.name}/disk`, { full: true }));
  fault(`disk-empty-${d.name}`, 'empty disk', () => api('POST', `/api/devices/${d.name}/disk`, { full: false }));
  fault(`clock-skew-${d.name}`, 'clock +1 h', () => api('POST', `/api/devices/${d.name}/clock`, { offsetMs: 3_600_000 }));
  fault(`clock-reset-${d.name}`, 'clock reset', () => api('POST', `/api/devices/${d.name}/clock`, { offsetMs: 0 }));
  box.append(faults);
  return box;
}

function renderState(d) {
  state.devices.set(d.name, d);
  const s = $(`state-${d.name}`);
  if (!s) return;
  const item = (cls, text, testid) => el('span', { class: cls, ...(testid ? { 'data-testid': testid } : {}) }, text);
  s.replaceChildren(
    item(d.connected ? 'ok' : 'bad', d.connected ? '● connected' : '○ not connected', `connected-${d.name}`),
    item('', d.link.replace('LINK_STATUS_', '').toLowerCase()),
    item(d.queueDepth > 0 ? 'warn' : '', `queue ${d.queueDepth}`, `queue-${d.name}`),
    item(d.agent.running ? '' : 'bad', d.agent.running ? `agent pid ${d.agent.pid}` : `agent down (${d.agent.lastExit || 'stopped'})`),
    item(d.uplink === 'ok' ? '' : 'bad', `uplink ${d.uplink}`, `uplink-${d.name}`),
    item(d.clock.offsetMs ? 'warn' : '', `clock ${new Date(d.clock.deviceTimeMs).toISOString().slice(11, 19)}${d.clock.offsetMs ? ` (${d.clock.offsetMs > 0 ? '+' : ''}${Math.round(d.clock.offsetMs / 1000)} s)` : ''}`),
    item(d.disk.full ? 'bad' : '', d.disk.tmpfs ? `disk ${d.disk.full ? 'FULL' : 'ok'}` : 'disk (no tmpfs)'),
    item(d.alarms.length ? 'bad' : 'ok', d.alarms.length ? `alarms: ${d.alarms.map((a) => a.replace('ALARM_CODE_', '')).join(', ')}` : 'no alarms', `alarms-${d.name}`),
  );
  if (d.printer) {
    const p = d.printer;
    const faults = Object.entries(p.faults)
      .filter(([, on]) => on)
      .map(([k]) => k);
    const agent = p.agent ? `; agent says ${p.agent.state}${p.agent.reasons.length ? ` (${p.agent.reasons.join(', ')})` : ''}, ${p.agent.jobsWaiting} waiting, ${p.agent.jobsUncertain} uncertain` : '';
    s.append(
      item(
        p.state === 'stopped' || faults.length ? 'bad' : 'ok',
        `printer ${p.name}: ${p.state}${p.reasons.includes('none') ? '' : ` (${p.reasons.join(', ')})`}${faults.length ? ` · faults: ${faults.join(', ')}` : ''} · ${p.recorded} recorded${agent}`,
        `printer-${d.name}`,
      ),
    );
  }
  $(`peripherals-${d.name}`).replaceChildren(
    ...d.peripherals.map((p) =>
      el('li', { class: p.online === false || !p.plugged ? 'bad' : 'ok' }, `${p.name}: ${p.plugged ? 'plugged' : 'UNPLUGGED'}${p.online === null ? '' : p.online ? ', online' : ', offline'}${p.detail ? ` — ${p.detail}` : ''}`),
    ),
  );
}

function addPunch(p) {
  const row = el(
    'tr',
    { class: p.historical ? 'historical' : '', 'data-device': p.deviceId, 'data-person': p.person || '', 'data-method': p.method, 'data-seq': String(p.seq), 'data-historical': String(p.historical) },
    el('td', {}, p.receivedAt.slice(11, 23)),
    el('td', {}, p.deviceId),
    el('td', {}, p.person || p.subjectId),
    el('td', {}, p.method),
    el('td', {}, String(p.seq)),
    el('td', {}, p.historical ? 'historical (backlog)' : ''),
  );
  $('feed').prepend(row);
}

function addReceipt(r) {
  $('receipts').prepend(
    el('tr', { 'data-device': r.deviceId, 'data-kind': r.kind }, el('td', {}, r.at.slice(11, 23)), el('td', {}, r.deviceId), el('td', {}, r.orgId), el('td', {}, r.kind), el('td', { class: r.ok ? 'ok' : 'bad' }, r.verification)),
  );
}

/** One row per print job, replaced as its status or its evidence changes. */
function addPrintJob(j) {
  const row = el(
    'tr',
    { id: `job-${j.jobId}`, 'data-device': j.deviceId, 'data-job': j.jobId, 'data-outcome': j.outcome, 'data-receipt': j.receipt, 'data-state': j.state },
    el('td', {}, j.deviceId),
    el('td', {}, j.jobId),
    el('td', {}, `${j.source}, ${j.bytes} B`),
    el('td', {}, j.state + (j.errorCode ? ` ${j.errorCode}` : '')),
    el('td', { class: j.outcome === 'printed' ? 'ok' : j.outcome === 'pending' ? '' : 'bad' }, `${j.outcome} (${j.exactCopies}/${j.recordings} exact)${j.contradicted ? ' CONTRADICTED' : ''}`),
    el('td', { class: j.receipt === 'verified' ? 'ok' : j.receipt === 'invalid' ? 'bad' : '' }, j.receipt),
  );
  const old = document.getElementById(`job-${j.jobId}`);
  if (old) old.replaceWith(row);
  else $('print-jobs').prepend(row);
}

async function start() {
  const lab = await api('GET', '/api/lab');
  $('site').textContent = lab.site;
  $('meta').textContent = `seed ${lab.seed} · broker ${lab.broker}`;
  state.people = (await api('GET', '/api/people')).people;
  const { devices } = await api('GET', '/api/devices');
  $('devices').replaceChildren(...devices.map(renderDevice));
  for (const d of devices) renderState(d);
  $('cmd-person').replaceChildren(...state.people.map((p) => el('option', { value: p.id }, p.id)));
  $('cmd-org').replaceChildren(...[...new Set(state.people.map((p) => p.org).concat(devices.map((d) => d.org)))].map((o) => el('option', { value: o }, o)));
  const cmd = (id, fn) => {
    const b = $(id);
    b.addEventListener(
      'click',
      act(b, async () => {
        const r = await fn();
        $('cmd-result').textContent = r.results.map((x) => `${x.device}: ${x.code.replace('RESULT_CODE_', '')} ${x.reason}`).join(' · ');
        return r;
      }),
    );
  };
  cmd('cmd-enrol', () => api('POST', '/api/commands/enrol', { person: $('cmd-person').value }));
  cmd('cmd-erase', () => api('POST', '/api/commands/erase', { person: $('cmd-person').value }));
  cmd('cmd-withdraw', () => api('POST', '/api/commands/withdraw', { org: $('cmd-org').value }));

  const es = new EventSource('/api/events');
  es.onopen = () => ($('status').textContent = 'live');
  es.onerror = () => ($('status').textContent = 'reconnecting…');
  es.addEventListener('punch', (e) => addPunch(JSON.parse(e.data)));
  es.addEventListener('receipt', (e) => addReceipt(JSON.parse(e.data)));
  es.addEventListener('device', (e) => renderState(JSON.parse(e.data)));
  es.addEventListener('print', (e) => addPrintJob(JSON.parse(e.data)));
  document.body.dataset.ready = 'true';
}

start().catch((err) => ($('status').textContent = `failed: ${err.message}`));
