-- Holds (fields of KEYS[2]) whose consumer's heartbeat key has expired go
-- back to the front of the queue (KEYS[1]), oldest first; returns how many.
local moved = 0
local holds = redis.call('HGETALL', KEYS[2])
for i = 1, #holds, 2 do
    local hold, heartbeat = holds[i], holds[i + 1]
    if redis.call('EXISTS', heartbeat) == 0 then
        while redis.call('LMOVE', hold, KEYS[1], 'LEFT', 'RIGHT') do
            moved = moved + 1
        end
        redis.call('HDEL', KEYS[2], hold)
    end
end
return moved
