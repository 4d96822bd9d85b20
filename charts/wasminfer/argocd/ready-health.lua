-- Argo CD health of the wasminfer.dev kinds whose state is one Ready condition the operator writes:
-- InferenceModel and ModelPool.
-- - InferenceModel: Healthy when the model's source is resolved for the current generation (with
--   spec.serving or spec.pool: when its model servers have it loaded).
-- - ModelPool: Healthy when every replica runs the current placement with its share loaded (or the
--   pool has no models).
-- Degraded when the object needs a fix (invalid spec, no device profile, wrong checksum, missing key,
-- models that need different profiles, a model server that cannot start); Progressing while the
-- operator has not looked yet, a source is not there yet, or model servers are starting or rolling.
local hs = {}

-- Ready=False reasons that waiting will not cure.
local failures = {
  InvalidSpec = true,
  NoDeviceProfile = true,
  KeyNotFound = true,
  SignatureMissing = true,
  SignatureInvalid = true,
  CredentialsRefused = true,
  PullSecretInvalid = true,
  ChecksumMismatch = true,
  ConflictingModels = true,
  -- model servers: a model's own, or a pool's replicas
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
