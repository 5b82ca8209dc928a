//! The Lua scripts: one write per sync, the atomic fold of a dead process, the stale sweep, the
//! collector's read.
//!
//! Every script checks key types before touching a key (or runs the command under `pcall` and
//! moves a key of the wrong type aside on `WRONGTYPE`, which Redis raises before writing
//! anything), reads before it writes and skips unparsable values and unknown fields, so bad data
//! under the prefix cannot make a script fail half-way.

use std::sync::OnceLock;

use deadpool_redis::redis::Script;

use crate::store::dbfile::Kind;

/// Shared Lua helpers: type checks, number parsing and formatting, and `fold(prefix, member)`.
fn common() -> String {
    let mut kinds = String::from("local RULES = {");
    let mut order = String::from("local KIND_ORDER = {");
    for kind in super::keys::all_kinds() {
        order.push_str(&format!("'{}', ", kind.prefix()));
        let rule = match kind {
            Kind::Counter | Kind::Histogram | Kind::Summary => "sum",
            // Native bucket counts: integers (decimal digits), added as digit strings.
            Kind::Native => "count",
            Kind::Exemplar => "drop",
            Kind::Gauge(m) if m.is_live() || m == crate::store::GaugeMode::All => "drop",
            Kind::Gauge(m) => m.combining().as_str(),
        };
        kinds.push_str(&format!("['{}'] = '{rule}', ", kind.prefix()));
    }
    kinds.push_str("}\n");
    order.push_str("}\n");
    kinds + &order + &format!("local CHUNK = {CHUNK}\n") + COMMON
}

/// Field/value pairs per `HSET` (and fields per `HMGET`): a process with more changed values
/// costs one more command per `CHUNK`. Well under Lua's `unpack` limit.
const CHUNK: usize = 1000;

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
local function is_err(r)
  return type(r) == 'table' and r.err ~= nil
end
-- ZSCORE that moves a key of the wrong type aside (and then finds nothing) instead of failing.
local function zscore(k, member)
  local r = redis.pcall('ZSCORE', k, member)
  if is_err(r) then
    ensure(k, 'zset')
    return false
  end
  return r
end
-- A command on a hash key run blind; only a key of the wrong type (garbage under our prefix:
-- WRONGTYPE, raised before anything is written) is moved aside and the command repeated.
local function on_hash(cmd, k, args)
  local r = redis.pcall(cmd, k, unpack(args))
  if is_err(r) then
    ensure(k, 'hash')
    r = redis.call(cmd, k, unpack(args))
  end
  return r
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
-- A native histogram count: decimal digits only (a u64 as Rust formats it, or a sum of them).
local function is_count(s)
  return type(s) == 'string' and string.find(s, '^%d+$') ~= nil
end
-- The exact sum of two counts, digit by digit: Lua's numbers are doubles, exact only to 2^53.
local function add_counts(a, b)
  local out, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + string.byte(a, i) - 48; i = i - 1 end
    if j > 0 then d = d + string.byte(b, j) - 48; j = j - 1 end
    if d >= 10 then d, carry = d - 10, 1 else carry = 0 end
    out[#out + 1] = string.char(48 + d)
  end
  local s = (string.gsub(string.reverse(table.concat(out)), '^0+', ''))
  if s == '' then s = '0' end
  return s
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Fold one process into the archives and delete its hash. Fields are `{kind}\t{series key}`;
-- fields without a known kind (garbage) and values that do not parse are skipped. Returns the
-- number of values folded.
local function fold(prefix, hb, member)
  local host = string.match(member, '^(.*):[^:]*:[^:]*$') or member
  local key = prefix .. ':proc:' .. member
  local folded = 0
  if key_type(key) == 'hash' then
    local flat = redis.call('HGETALL', key)
    -- kind -> {archive fields, values}
    local by_kind = {}
    for i = 1, #flat, 2 do
      local kind, series = string.match(flat[i], '^([^\t]*)\t(.*)$')
      local rule = kind and RULES[kind]
      if rule and rule ~= 'drop' then
        local b = by_kind[kind]
        if not b then
          b = {{}, {}}
          by_kind[kind] = b
        end
        b[1][#b[1] + 1] = host .. '\t' .. series
        b[2][#b[2] + 1] = flat[i + 1]
      end
    end
    for kind, b in pairs(by_kind) do
      local rule, with_ts = RULES[kind], RULES[kind] == 'mostrecent'
      local akey = prefix .. ':archive:' .. kind
      local fields, values = b[1], b[2]
      local j = 0
      while j < #fields do
        local m = math.min(#fields - j, CHUNK)
        local names = {}
        for p = 1, m do names[p] = fields[j + p] end
        local curs = on_hash('HMGET', akey, names)
        local args = {}
        for p = 1, m do
          local out
          if rule == 'count' then
            local v, cur = values[j + p], curs[p]
            if is_count(v) then
              if is_count(cur) then out = add_counts(cur, v) else out = v end
            end
          else
            local v, ts = parse(values[j + p], with_ts)
            if v ~= nil then
              local cur = curs[p]
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
            end
          end
          if out then
            args[#args + 1] = names[p]
            args[#args + 1] = out
            folded = folded + 1
          end
        end
        if #args > 0 then redis.call('HSET', akey, unpack(args)) end
        j = j + m
      end
    end
  end
  redis.call('DEL', key)
  redis.call('ZREM', hb, member)
  return folded
end
"#;

/// KEYS: heartbeat, folded. ARGV: prefix, then per process: member, incremental (0/1), number
/// of pairs, then field (`{kind}\t{series key}`), value, ...
///
/// A registered process costs `ZADD XX CH` (refresh its heartbeat; 1 = it was registered) plus
/// one `HSET` of all its changed fields (one per `CHUNK` fields); `ZSCORE`s only when the
/// `ZADD` changed nothing (a new, folded or lost process, or the same score).
///
/// Returns `[member, status, ...]` for the processes not written normally: `folded` (it was
/// folded as stale: nothing written; re-register it) or `missing` (an incremental write found no
/// heartbeat: Redis lost data; resend everything).
const WRITE: &str = r#"
local hb, tomb, prefix = KEYS[1], KEYS[2], ARGV[1]
local t = now()
local out = {}
local i = 2
while i <= #ARGV do
  local member, incremental, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  -- A registered process cannot be in the folded set (folding removes it from the heartbeat
  -- and a re-registered process has a new member).
  local known = false
  local r = redis.pcall('ZADD', hb, 'XX', 'CH', t, member)
  if is_err(r) then
    ensure(hb, 'zset')
  elseif r == 1 then
    known = true
  else
    known = zscore(hb, member) ~= false
  end
  local dead = (not known) and zscore(tomb, member)
  if not dead and n > 0 then
    local key = prefix .. ':proc:' .. member
    local j = 0
    while j < n do
      local args = {}
      local m = math.min(n - j, CHUNK)
      for p = 0, 2 * m - 1 do
        args[p + 1] = ARGV[i + 2 * j + p]
      end
      on_hash('HSET', key, args)
      j = j + m
    end
  end
  i = i + 2 * n
  if dead then
    out[#out + 1] = member
    out[#out + 1] = 'folded'
  elseif not known then
    redis.call('ZADD', hb, t, member)
    if incremental == '1' then
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
if not zscore(hb, member) then return -1 end
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

/// KEYS: heartbeat. ARGV: prefix. Returns `[now, [member, score, ...], [per member: HGETALL of
/// its hash], [per kind of all_kinds(): HGETALL of its archive]]`; keys of the wrong type read
/// as empty.
const READ: &str = r#"
local hb, prefix = KEYS[1], ARGV[1]
local function hash(k)
  local r = redis.pcall('HGETALL', k)
  if is_err(r) then return {} end
  return r
end
local members = {}
if key_type(hb) == 'zset' then members = redis.call('ZRANGE', hb, 0, -1, 'WITHSCORES') end
local procs = {}
for i = 1, #members, 2 do
  procs[#procs + 1] = hash(prefix .. ':proc:' .. members[i])
end
local arch = {}
for _, kind in ipairs(KIND_ORDER) do
  arch[#arch + 1] = hash(prefix .. ':archive:' .. kind)
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
