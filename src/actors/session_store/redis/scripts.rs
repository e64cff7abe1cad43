//! The Lua scripts of the Redis session repository: each a check-and-write
//! on one key, atomic on the server and Cluster-safe.

use std::sync::LazyLock;

use bb8_redis::redis::Script;

/// Creates a session unless its key exists (a 256-bit collision will not
/// happen, but a session is never overwritten), with its expiry, atomically.
/// KEYS[1] session; ARGV uid, user JSON, cached-until, created, ttl, client
/// address, user agent.
pub static CREATE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'user', ARGV[2], 'cu', ARGV[3], 'created', ARGV[4],
  'seen', ARGV[4], 'addr', ARGV[6], 'ua', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1",
    )
});

/// Reserves a login attempt on an (account, address) pair if its budget
/// has room for it besides the failures and the attempts being checked:
/// returns reserved (1/0), failures, in flight and the pair's TTL.
/// KEYS[1] pair hash {f, r}; ARGV max failures, window.
pub static RESERVE_LOGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
local r = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
local reserved = 0
if f + r < tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'r', 1)
  reserved = 1
end
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {reserved, f, r, redis.call('PTTL', KEYS[1])}",
    )
});

/// Settles a reserved login attempt: releases it, and counts a failure
/// (ARGV[1] = 'failed') or clears the pair's failures ('succeeded').
/// KEYS[1] pair hash; ARGV outcome, window.
pub static FINISH_LOGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if tonumber(redis.call('HGET', KEYS[1], 'r') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'r', -1)
end
if ARGV[1] == 'failed' then
  redis.call('HINCRBY', KEYS[1], 'f', 1)
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
elseif ARGV[1] == 'succeeded' then
  redis.call('HSET', KEYS[1], 'f', 0)
end
return 1",
    )
});

/// Records that a session was used, unless it has ended meanwhile.
/// KEYS[1] session; ARGV now.
pub static TOUCH_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
return 1",
    )
});

/// Refreshes a session's copy of its user, unless the session has ended
/// meanwhile (a plain HSET would bring it back, without expiry).
/// KEYS[1] session; ARGV user JSON, cached-until.
pub static REFRESH_SESSION_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'cu', ARGV[2])
return 1",
    )
});

/// Ends a session, returning its user id (nil if there was none).
/// KEYS[1] session.
pub static END_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local uid = redis.call('HGET', KEYS[1], 'uid')
if not uid then return false end
redis.call('DEL', KEYS[1])
return uid",
    )
});
