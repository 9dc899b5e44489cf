-- Due tasks leave the schedule (KEYS[1]) and join the queue (KEYS[2]) in one
-- step, so a scheduler killed in between loses none; returns how many.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 1, #due do
    redis.call('LPUSH', KEYS[2], due[i])
end
if #due > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
return #due
