//! The Lua scripts: one write per sync, the atomic fold of a dead process, the stale sweep.
//!
//! Every script checks key types before touching a key, reads before it writes and skips
//! unparsable values, so bad data under the prefix cannot make a script fail half-way.

use std::sync::OnceLock;

use deadpool_redis::redis::Script;

use crate::dbfile::Kind;

/// Shared Lua helpers: type checks, number parsing and formatting, and `fold(prefix, member)`.
fn common() -> String {
    let mut kinds = String::from("local KINDS = {");
    for kind in super::keys::all_kinds() {
        let rule = match kind {
            Kind::Counter | Kind::Histogram | Kind::Summary => "sum",
            Kind::Gauge(m) if m.is_live() || m == crate::GaugeMode::All => "drop",
            Kind::Gauge(m) => m.combining().as_str(),
        };
        kinds.push_str(&format!("{{'{}', '{rule}'}}, ", kind.prefix()));
    }
    kinds.push_str("}\n");
    kinds + COMMON
}

const COMMON: &str = r#"
local function key_type(k)
  return redis.call('TYPE', k)['ok']
end
-- Make `k` usable as `want`: a key of another type is garbage under our prefix; move it aside.
local function ensure(k, want)
  local t = key_type(k)
  if t ~= want and t ~= 'none' then
    redis.call('RENAME', k, k .. ':corrupt')
  end
end
local function num(s)
  if type(s) ~= 'string' then return nil end
  local n = tonumber(s)
  if n == nil and (s == 'nan' or s == '-nan' or s == 'NaN') then n = 0/0 end
  return n
end
local function parse(s, with_ts)
  if with_ts then
    local a, b = string.match(s, '^(%S+) (%S+)$')
    local v, ts = num(a), num(b)
    if v == nil or ts == nil then return nil end
    return v, ts
  end
  local v = num(s)
  return v, 0
end
local function fmt(v) return string.format('%.17g', v) end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Fold one process into the archive and delete its keys. Returns the number of values folded.
local function fold(prefix, hb, member)
  local host = string.match(member, '^(.*):[^:]*:[^:]*$') or member
  local base = prefix .. ':proc:' .. member .. ':'
  local folded = 0
  for _, spec in ipairs(KINDS) do
    local kind, rule = spec[1], spec[2]
    local key = base .. kind
    if rule ~= 'drop' and key_type(key) == 'hash' then
      local akey = prefix .. ':archive:' .. kind
      ensure(akey, 'hash')
      local flat = redis.call('HGETALL', key)
      local with_ts = (rule == 'mostrecent')
      for i = 1, #flat, 2 do
        local v, ts = parse(flat[i + 1], with_ts)
        if v ~= nil then
          local field = host .. '\t' .. flat[i]
          local cur = redis.call('HGET', akey, field)
          local out
          if cur then
            local cv, cts = parse(cur, with_ts)
            if cv == nil then cv, cts = v, ts
            elseif rule == 'sum' then cv = cv + v
            elseif rule == 'min' then if v < cv then cv = v end
            elseif rule == 'max' then if v > cv then cv = v end
            elseif rule == 'mostrecent' then if ts > cts then cv, cts = v, ts end
            end
            v, ts = cv, cts
          end
          if with_ts then out = fmt(v) .. ' ' .. fmt(ts) else out = fmt(v) end
          redis.call('HSET', akey, field, out)
          folded = folded + 1
        end
      end
    end
    redis.call('DEL', key)
  end
  redis.call('ZREM', hb, member)
  return folded
end
"#;

/// KEYS: heartbeat, folded. ARGV: prefix, then per process: member, incremental (0/1), number
/// of kinds, then per kind: kind, number of pairs, field, value, ...
///
/// Returns `[member, status, ...]` for the processes not written normally: `folded` (it was
/// folded as stale: nothing written; re-register it) or `missing` (an incremental write found no
/// heartbeat: Redis lost data; resend everything).
const WRITE: &str = r#"
local hb, tomb, prefix = KEYS[1], KEYS[2], ARGV[1]
ensure(hb, 'zset')
ensure(tomb, 'zset')
local t = now()
local out = {}
local i = 2
while i <= #ARGV do
  local member, incremental, nk = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  -- A registered process cannot be in the folded set (folding removes it from the heartbeat
  -- and a re-registered process has a new member): one lookup in the common case.
  local known = redis.call('ZSCORE', hb, member)
  local dead = (not known) and redis.call('ZSCORE', tomb, member)
  for _ = 1, nk do
    local kind, n = ARGV[i], tonumber(ARGV[i + 1])
    i = i + 2
    if not dead and n > 0 then
      local key = prefix .. ':proc:' .. member .. ':' .. kind
      local j = 0
      while j < n do
        local args = {}
        local m = math.min(n - j, 200)
        for p = 0, m - 1 do
          args[#args + 1] = ARGV[i + 2 * (j + p)]
          args[#args + 1] = ARGV[i + 2 * (j + p) + 1]
        end
        -- Written blind; only a key of the wrong type (garbage under our prefix: WRONGTYPE,
        -- raised before anything is written) is moved aside and the write repeated.
        local r = redis.pcall('HSET', key, unpack(args))
        if type(r) == 'table' and r.err then
          ensure(key, 'hash')
          redis.call('HSET', key, unpack(args))
        end
        j = j + m
      end
    end
    i = i + 2 * n
  end
  if dead then
    out[#out + 1] = member
    out[#out + 1] = 'folded'
  else
    redis.call('ZADD', hb, t, member)
    if incremental == '1' and not known then
      out[#out + 1] = member
      out[#out + 1] = 'missing'
    end
  end
end
return out
"#;

/// KEYS: heartbeat. ARGV: prefix, member. Folds the process if it is registered.
const FOLD: &str = r#"
local hb, prefix, member = KEYS[1], ARGV[1], ARGV[2]
ensure(hb, 'zset')
if not redis.call('ZSCORE', hb, member) then return -1 end
return fold(prefix, hb, member)
"#;

/// KEYS: heartbeat, folded. ARGV: prefix, ttl seconds, limit. Folds up to `limit` processes whose
/// heartbeat is older than the TTL (by Redis's clock) and records them in `folded` for 7 days.
/// Returns their members.
const SWEEP: &str = r#"
local hb, tomb, prefix = KEYS[1], KEYS[2], ARGV[1]
ensure(hb, 'zset')
ensure(tomb, 'zset')
local t = now()
local stale = redis.call('ZRANGEBYSCORE', hb, '-inf', '(' .. fmt(t - tonumber(ARGV[2])), 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(stale) do
  fold(prefix, hb, member)
  redis.call('ZADD', tomb, t, member)
end
redis.call('ZREMRANGEBYSCORE', tomb, '-inf', '(' .. fmt(t - 7 * 86400))
return stale
"#;

/// KEYS: heartbeat. ARGV: prefix. Returns `[now, [member, score, ...], [per member: [per kind:
/// HGETALL]], [per kind: archive HGETALL]]`, kinds in `all_kinds()` order; keys of the wrong type
/// read as empty.
const READ: &str = r#"
local hb, prefix = KEYS[1], ARGV[1]
local function hash(k)
  if key_type(k) == 'hash' then return redis.call('HGETALL', k) end
  return {}
end
local members = {}
if key_type(hb) == 'zset' then members = redis.call('ZRANGE', hb, 0, -1, 'WITHSCORES') end
local procs = {}
for i = 1, #members, 2 do
  local per = {}
  for _, spec in ipairs(KINDS) do
    per[#per + 1] = hash(prefix .. ':proc:' .. members[i] .. ':' .. spec[1])
  end
  procs[#procs + 1] = per
end
local arch = {}
for _, spec in ipairs(KINDS) do
  arch[#arch + 1] = hash(prefix .. ':archive:' .. spec[1])
end
return {fmt(now()), members, procs, arch}
"#;

fn script(cell: &'static OnceLock<Script>, body: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(&(common() + body)))
}

pub(crate) fn write() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    script(&S, WRITE)
}

pub(crate) fn fold() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    script(&S, FOLD)
}

pub(crate) fn sweep() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    script(&S, SWEEP)
}

pub(crate) fn read() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    script(&S, READ)
}
