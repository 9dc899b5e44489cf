-- A lock held by token ARGV[1] (KEYS[1]): ARGV[2] = 'renew' extends it by
-- ARGV[3] ms, 'release' deletes it; 1 when it was still this holder's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[2] == 'renew' then
    return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('DEL', KEYS[1])
