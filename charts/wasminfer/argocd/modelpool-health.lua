-- Argo CD health of a wasminfer.dev ModelPool, from the Ready condition the operator writes.
-- Healthy when every replica runs the current placement with its share of the models loaded (or the
-- pool has no models); Degraded when the pool needs a fix (invalid spec, models that need different
-- profiles, an unknown profile, a replica that cannot start); Progressing while the operator has not
-- looked yet or replicas are starting or rolling onto a new placement.
local hs = {}

-- Ready=False reasons that waiting will not cure.
local failures = {
  InvalidSpec = true,
  NoDeviceProfile = true,
  ConflictingModels = true,
  UnknownProfile = true,
  ApplyFailed = true,
  ChildConflict = true,
  FetchFailed = true,
  InvalidImageName = true,
  ImagePullBackOff = true,
  ErrImagePull = true,
  CrashLoopBackOff = true,
  CreateContainerConfigError = true,
}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return c.type .. " is " .. tostring(c.status)
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and failures[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = describe(ready)
return hs
