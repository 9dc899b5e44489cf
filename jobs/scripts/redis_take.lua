-- Move up to ARGV[1] tasks from the queue (KEYS[1]) into a worker's hold (KEYS[2]).
-- The consumer's heartbeat (KEYS[4]) is renewed and the hold registered
-- (KEYS[3]: hold -> heartbeat) in the same step, so nothing is ever held
-- without a live lease. With ARGV[3] = "1", what the hold still has from
-- a batch that was not acknowledged goes back to the front of the queue first.
-- The queue is LPUSHed, so its head is on the right.
if ARGV[3] == '1' then
    while redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT') do end
end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
redis.call('HSET', KEYS[3], KEYS[2], KEYS[4])
local taken = {}
for i = 1, tonumber(ARGV[1]) do
    local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
    if not item then
        break
    end
    taken[i] = item
end
return taken
