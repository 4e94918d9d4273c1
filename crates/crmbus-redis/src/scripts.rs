//! The Lua scripts that make each operation atomic on the server.
//!
//! Every script starts with `#!lua` (Redis 7 script flags): a script without the
//! `allow-oom` flag is refused *before it runs* when Redis is out of memory, so a script
//! that validated its input never stops half-way through its writes for lack of memory.
//! Errors a script reports on purpose have codes starting with `CRMBUS_`.

use redis::Script;

/// Shared helpers, pasted after the shebang of each script.
macro_rules! prelude {
    () => {
        r#"
local function num(n) return string.format('%d', n) end
local function spec_partitions(P, name)
  local spec = redis.call('HGET', P .. ':topics', name)
  if not spec then return nil end
  local ok, s = pcall(cjson.decode, spec)
  if not ok then return -1 end
  return tonumber(s.partitions) or -1
end
local function offset_of(id)
  local s = string.match(id, '^0%-(%d+)$')
  if not s then return nil end
  return tonumber(s) - 1
end
local function first_offset(skey, nxt)
  local e = redis.call('XRANGE', skey, '-', '+', 'COUNT', 1)
  if #e == 0 then return nxt end
  return offset_of(e[1][1]) or nxt
end
-- Checks the fences ARGV[i] (a count n) and the n (lease, token) pairs after it: returns
-- the index after them, or an error reply naming the first lease not held with its token.
local function check_fences(P, i)
  local n = tonumber(ARGV[i]) or 0
  for j = 1, n do
    local lease, token = ARGV[i + 2 * j - 1], ARGV[i + 2 * j]
    if redis.call('HGET', P .. ':lease:' .. lease, 'token') ~= token then
      return nil, redis.error_reply('CRMBUS_FENCED lease ' .. lease .. ' is no longer held with token ' .. token)
    end
  end
  return i + 2 * n + 1, nil
end
local function check_partition(P, name, p)
  local n = spec_partitions(P, name)
  if not n then return redis.error_reply('CRMBUS_NOTFOUND ' .. name) end
  if p < 0 or p >= n then return redis.error_reply('CRMBUS_NOPARTITION ' .. name .. ' ' .. num(p)) end
  return nil
end
"#
    };
}

/// Creates a topic. ARGV: prefix, name, spec JSON, partitions.
pub(crate) const CREATE: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name, spec, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HEXISTS', P .. ':topics', name) == 1 then
  return redis.error_reply('CRMBUS_EXISTS ' .. name)
end
-- Leftovers of an earlier incarnation (there should be none: delete removes them).
redis.call('DEL', P .. ':seq:' .. name)
for p = 0, n - 1 do redis.call('DEL', P .. ':stream:' .. name .. ':' .. num(p)) end
redis.call('HSET', P .. ':topics', name, spec)
redis.call('HINCRBY', P .. ':topicgen', name, 1)
return 1
"#
);

/// Deletes a topic, its streams (with their consumer groups) and counters.
/// ARGV: prefix, name.
pub(crate) const DELETE: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name = ARGV[1], ARGV[2]
local n = spec_partitions(P, name)
if not n then return redis.error_reply('CRMBUS_NOTFOUND ' .. name) end
for p = 0, n - 1 do redis.call('DEL', P .. ':stream:' .. name .. ':' .. num(p)) end
redis.call('DEL', P .. ':seq:' .. name)
redis.call('HDEL', P .. ':topics', name)
return 1
"#
);

/// Describes a topic: `{spec, first0, next0, first1, next1, ...}`. ARGV: prefix, name.
pub(crate) const INFO: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name = ARGV[1], ARGV[2]
local spec = redis.call('HGET', P .. ':topics', name)
if not spec then return redis.error_reply('CRMBUS_NOTFOUND ' .. name) end
local n = spec_partitions(P, name)
local out = { spec }
for p = 0, n - 1 do
  local nxt = tonumber(redis.call('HGET', P .. ':seq:' .. name, num(p))) or 0
  local first = first_offset(P .. ':stream:' .. name .. ':' .. num(p), nxt)
  out[#out + 1] = first
  out[#out + 1] = nxt
end
return out
"#
);

/// Appends a batch to one or more topics, all or nothing, with producer dedupe.
///
/// ARGV: prefix, dedupe window in ms (0: no dedupe across calls), T (topics), N (events),
/// then T × (name, expected partitions), then N × (event JSON, dedupe hash hex, identity),
/// then T × N partition numbers (topic-major). Returns T × N × (partition, offset,
/// duplicate 0/1), topic-major.
pub(crate) const APPEND: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P = ARGV[1]
local window = tonumber(ARGV[2])
local T = tonumber(ARGV[3])
local N = tonumber(ARGV[4])
local i = 5
local names, parts = {}, {}
for t = 1, T do
  names[t] = ARGV[i]; parts[t] = tonumber(ARGV[i + 1]); i = i + 2
end
local ebase = i
local pbase = ebase + 3 * N
-- Check everything before writing anything.
local gens = {}
for t = 1, T do
  local n = spec_partitions(P, names[t])
  if not n then return redis.error_reply('CRMBUS_NOTFOUND ' .. names[t]) end
  if n ~= parts[t] then return redis.error_reply('CRMBUS_STALE ' .. names[t]) end
  gens[t] = redis.call('HGET', P .. ':topicgen', names[t]) or '0'
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local out = {}
for t = 1, T do
  local name = names[t]
  local seq = P .. ':seq:' .. name
  local nxt, last, added = {}, {}, {}
  local seen = {}
  for e = 1, N do
    local json = ARGV[ebase + 3 * (e - 1)]
    local hash = ARGV[ebase + 3 * (e - 1) + 1]
    local ident = ARGV[ebase + 3 * (e - 1) + 2]
    local dkey = P .. ':dedupe:' .. name .. ':' .. hash
    local prior = seen[ident]
    local stale = true
    if not prior and window > 0 then
      local v = redis.call('GET', dkey)
      if v then
        local g, p, off, id2 = string.match(v, '^(%d+) (%d+) (%d+) (.*)$')
        if g == gens[t] then
          stale = false
          if id2 == ident then prior = { tonumber(p), tonumber(off) } end
        end
      end
    end
    if prior then
      out[#out + 1] = prior[1]; out[#out + 1] = prior[2]; out[#out + 1] = 1
    else
      local p = tonumber(ARGV[pbase + (t - 1) * N + (e - 1)])
      if nxt[p] == nil then
        local v = redis.call('HMGET', seq, num(p), 'ts:' .. num(p))
        nxt[p] = tonumber(v[1]) or 0
        last[p] = tonumber(v[2]) or 0
        added[p] = 0
      end
      local off = nxt[p]
      local ts = now
      if last[p] > ts then ts = last[p] end
      redis.call('XADD', P .. ':stream:' .. name .. ':' .. num(p), '0-' .. num(off + 1),
        'event', json, 'ts', num(ts))
      nxt[p] = off + 1
      last[p] = ts
      added[p] = added[p] + string.len(json)
      -- A live entry for another event with the same 64-bit digest is left alone.
      if window > 0 and stale then
        redis.call('SET', dkey, gens[t] .. ' ' .. num(p) .. ' ' .. num(off) .. ' ' .. ident,
          'PX', window)
      end
      seen[ident] = { p, off }
      out[#out + 1] = p; out[#out + 1] = off; out[#out + 1] = 0
    end
  end
  for p, n in pairs(nxt) do
    redis.call('HSET', seq, num(p), num(n), 'ts:' .. num(p), num(last[p]))
    redis.call('HINCRBY', seq, 'bytes:' .. num(p), added[p])
  end
end
return out
"#
);

/// Reads a partition from an offset after checking the topic and partition exist.
/// ARGV: prefix, name, partition, first stream id, count. Returns the `XRANGE` reply.
pub(crate) const READ: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name, p = ARGV[1], ARGV[2], tonumber(ARGV[3])
local err = check_partition(P, name, p)
if err then return err end
return redis.call('XRANGE', P .. ':stream:' .. name .. ':' .. num(p), ARGV[4], '+', 'COUNT', ARGV[5])
"#
);

/// The first offset whose append time is at or after a time (binary search over the
/// contiguous entries). ARGV: prefix, name, partition, time in µs.
pub(crate) const OFFSET_FOR_TIME: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name, p, t = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local err = check_partition(P, name, p)
if err then return err end
local skey = P .. ':stream:' .. name .. ':' .. num(p)
local hi = tonumber(redis.call('HGET', P .. ':seq:' .. name, num(p))) or 0
local lo = first_offset(skey, hi)
local function ts_at(off)
  local e = redis.call('XRANGE', skey, '0-' .. num(off + 1), '0-' .. num(off + 1))
  if #e == 0 then return nil end
  local f = e[1][2]
  for k = 1, #f, 2 do
    if f[k] == 'ts' then return tonumber(f[k + 1]) end
  end
  return nil
end
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local ts = ts_at(mid)
  if ts == nil or ts < t then lo = mid + 1 else hi = mid end
end
return lo
"#
);

/// Commits a group offset as the consumer group's position on the partition stream.
/// ARGV: prefix, name, partition, group, position id, fence count n, n (lease, token)
/// pairs (the commit is refused unless each lease is held with its token).
pub(crate) const COMMIT: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name, p, group, id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local _, fenced = check_fences(P, 6)
if fenced then return fenced end
local err = check_partition(P, name, p)
if err then return err end
local skey = P .. ':stream:' .. name .. ':' .. num(p)
local r = redis.pcall('XGROUP', 'CREATE', skey, group, id, 'MKSTREAM')
if type(r) == 'table' and r.err then
  if string.find(r.err, 'BUSYGROUP', 1, true) then
    redis.call('XGROUP', 'SETID', skey, group, id)
  else
    return r
  end
end
return 1
"#
);

/// Reads a consumer group's position (`last-delivered-id`), or nil when there is no such
/// group. ARGV: prefix, name, partition, group.
pub(crate) const COMMITTED: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name, p, group = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local err = check_partition(P, name, p)
if err then return err end
local skey = P .. ':stream:' .. name .. ':' .. num(p)
if redis.call('EXISTS', skey) == 0 then return false end
local groups = redis.call('XINFO', 'GROUPS', skey)
for _, g in ipairs(groups) do
  local gname, last = nil, nil
  for k = 1, #g, 2 do
    if g[k] == 'name' then gname = g[k + 1] elseif g[k] == 'last-delivered-id' then last = g[k + 1] end
  end
  if gname == group then return last end
end
return false
"#
);

/// Creates a consumer group at the start of each partition stream unless it exists.
/// ARGV: prefix, name, group. Returns the partition count.
pub(crate) const ENSURE_GROUP: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name, group = ARGV[1], ARGV[2], ARGV[3]
local n = spec_partitions(P, name)
if not n then return redis.error_reply('CRMBUS_NOTFOUND ' .. name) end
for p = 0, n - 1 do
  local skey = P .. ':stream:' .. name .. ':' .. num(p)
  local r = redis.pcall('XGROUP', 'CREATE', skey, group, '0-0', 'MKSTREAM')
  if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then
    return r
  end
end
return n
"#
);

/// Applies the topic's retention to every partition. ARGV: prefix, name, max bytes (-1:
/// none), max age in µs (-1: none). Returns how many entries were removed.
pub(crate) const RETAIN: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P, name = ARGV[1], ARGV[2]
local max_bytes, max_age = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = spec_partitions(P, name)
if not n then return 0 end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local min_ts = -1
if max_age >= 0 then min_ts = now - max_age end
local seq = P .. ':seq:' .. name
local total = 0
for p = 0, n - 1 do
  local skey = P .. ':stream:' .. name .. ':' .. num(p)
  local bytes = tonumber(redis.call('HGET', seq, 'bytes:' .. num(p))) or 0
  local len = redis.call('XLEN', skey)
  local removed, freed, cut = 0, 0, nil
  local start = '-'
  local done = false
  while not done do
    local batch = redis.call('XRANGE', skey, start, '+', 'COUNT', 256)
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      local f = entry[2]
      local ts, size = 0, 0
      for k = 1, #f, 2 do
        if f[k] == 'ts' then ts = tonumber(f[k + 1]) or 0
        elseif f[k] == 'event' then size = string.len(f[k + 1]) end
      end
      local old = min_ts >= 0 and ts < min_ts
      -- Size never removes the newest entry.
      local big = max_bytes >= 0 and (bytes - freed) > max_bytes and (len - removed) > 1
      if old or big then
        removed = removed + 1; freed = freed + size; cut = entry[1]
      else
        done = true
        break
      end
    end
    if not done then start = '(' .. batch[#batch][1] end
  end
  if cut then
    local off = offset_of(cut)
    redis.call('XTRIM', skey, 'MINID', '=', '0-' .. num(off + 2))
    redis.call('HINCRBY', seq, 'bytes:' .. num(p), -freed)
    total = total + removed
  end
end
return total
"#
);

/// Applies a state-store batch. ARGV: prefix, fence count n, n (lease, token) pairs (the
/// batch is refused unless each lease is held with its token), then quads (op `P`/`D`,
/// namespace, key, value).
pub(crate) const STATE_APPLY: &str = concat!(
    "#!lua\n",
    prelude!(),
    r#"
local P = ARGV[1]
local first, fenced = check_fences(P, 2)
if fenced then return fenced end
for i = first, #ARGV, 4 do
  local op, ns, k = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local zk, hk = P .. ':state:keys:' .. ns, P .. ':state:vals:' .. ns
  if op == 'P' then
    redis.call('HSET', hk, k, ARGV[i + 3])
    redis.call('ZADD', zk, 0, k)
  else
    redis.call('HDEL', hk, k)
    redis.call('ZREM', zk, k)
  end
end
return 1
"#
);

/// Scans a state-store namespace by key prefix, sorted. ARGV: prefix, namespace, key
/// prefix. Returns `{k1, v1, k2, v2, ...}`.
pub(crate) const STATE_SCAN: &str = r#"#!lua
local P, ns, prefix = ARGV[1], ARGV[2], ARGV[3]
local zk, hk = P .. ':state:keys:' .. ns, P .. ':state:vals:' .. ns
local keys
if prefix == '' then
  keys = redis.call('ZRANGE', zk, 0, -1)
else
  -- No UTF-8 key has the byte 0xFF, so this range is exactly the keys with the prefix.
  keys = redis.call('ZRANGEBYLEX', zk, '[' .. prefix, '(' .. prefix .. '\255')
end
local out = {}
for i = 1, #keys, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #keys) do chunk[#chunk + 1] = keys[j] end
  local vals = redis.call('HMGET', hk, unpack(chunk))
  for j = 1, #chunk do
    if vals[j] then
      out[#out + 1] = chunk[j]
      out[#out + 1] = vals[j]
    end
  end
end
return out
"#;

/// Takes a lease if nobody holds it. ARGV: prefix, name, holder, data, ttl (ms). Returns
/// the new fencing token (from the counter `<prefix>:lease-token`), or nil when held.
pub(crate) const LEASE_ACQUIRE: &str = r#"#!lua
local P, name, holder, data, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = P .. ':lease:' .. name
if redis.call('EXISTS', k) == 1 then return false end
local token = redis.call('INCR', P .. ':lease-token')
redis.call('HSET', k, 'holder', holder, 'token', token, 'data', data)
redis.call('PEXPIRE', k, ttl)
redis.call('ZADD', P .. ':leases', 0, name)
return token
"#;

/// Extends a lease held with a token. ARGV: prefix, name, token, ttl (ms). Returns 1, or
/// 0 when the lease is not held with that token.
pub(crate) const LEASE_RENEW: &str = r#"#!lua
local P, name, token, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = P .. ':lease:' .. name
if redis.call('HGET', k, 'token') ~= token then return 0 end
redis.call('PEXPIRE', k, ttl)
return 1
"#;

/// Gives up a lease held with a token; with the token `*`, whoever holds it. ARGV:
/// prefix, name, token. Returns 1 if it was removed.
pub(crate) const LEASE_RELEASE: &str = r#"#!lua
local P, name, token = ARGV[1], ARGV[2], ARGV[3]
local k = P .. ':lease:' .. name
if token ~= '*' and redis.call('HGET', k, 'token') ~= token then return 0 end
redis.call('DEL', k)
redis.call('ZREM', P .. ':leases', name)
return 1
"#;

/// Lists the leases held now whose name starts with a prefix, forgetting the names of
/// expired ones. ARGV: prefix, name prefix. Returns `{name, holder, token, pttl, data, ...}`.
pub(crate) const LEASE_LIST: &str = r#"#!lua
local P, prefix = ARGV[1], ARGV[2]
local z = P .. ':leases'
local names
if prefix == '' then
  names = redis.call('ZRANGE', z, 0, -1)
else
  names = redis.call('ZRANGEBYLEX', z, '[' .. prefix, '(' .. prefix .. '\255')
end
local out = {}
for _, name in ipairs(names) do
  local k = P .. ':lease:' .. name
  local v = redis.call('HMGET', k, 'holder', 'token', 'data')
  local ttl = redis.call('PTTL', k)
  if v[1] and ttl > 0 then
    out[#out + 1] = name
    out[#out + 1] = v[1]
    out[#out + 1] = v[2]
    out[#out + 1] = tostring(ttl)
    out[#out + 1] = v[3] or ''
  else
    redis.call('ZREM', z, name)
  end
end
return out
"#;

/// Every script, loaded once per connection.
pub(crate) struct Scripts {
    pub(crate) create: Script,
    pub(crate) delete: Script,
    pub(crate) info: Script,
    pub(crate) append: Script,
    pub(crate) read: Script,
    pub(crate) offset_for_time: Script,
    pub(crate) commit: Script,
    pub(crate) committed: Script,
    pub(crate) ensure_group: Script,
    pub(crate) retain: Script,
    pub(crate) state_apply: Script,
    pub(crate) state_scan: Script,
    pub(crate) lease_acquire: Script,
    pub(crate) lease_renew: Script,
    pub(crate) lease_release: Script,
    pub(crate) lease_list: Script,
}

impl Scripts {
    /// Hashes every script (they are sent to the server on first use).
    pub(crate) fn new() -> Scripts {
        Scripts {
            create: Script::new(CREATE),
            delete: Script::new(DELETE),
            info: Script::new(INFO),
            append: Script::new(APPEND),
            read: Script::new(READ),
            offset_for_time: Script::new(OFFSET_FOR_TIME),
            commit: Script::new(COMMIT),
            committed: Script::new(COMMITTED),
            ensure_group: Script::new(ENSURE_GROUP),
            retain: Script::new(RETAIN),
            state_apply: Script::new(STATE_APPLY),
            state_scan: Script::new(STATE_SCAN),
            lease_acquire: Script::new(LEASE_ACQUIRE),
            lease_renew: Script::new(LEASE_RENEW),
            lease_release: Script::new(LEASE_RELEASE),
            lease_list: Script::new(LEASE_LIST),
        }
    }
}
