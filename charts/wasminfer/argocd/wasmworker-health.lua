-- Argo CD health of a wasminfer.dev WasmWorker.
-- Argo CD does not look at a custom resource's children, so the operator copies pod, scheduling and
-- model state into status.conditions; this reads them. Healthy only when Ready is True for the
-- current generation; Degraded when the operator reports Degraded or placement cannot be decided
-- without a fix; Progressing otherwise (rolling out, waiting for a model, waiting for a node),
-- always with the deciding condition's message.
local hs = {}

-- Ready=False reasons that waiting will not cure even though nothing has failed yet.
local failures = {
  NoDeviceProfile = true,
  ConflictingModels = true,
  UnknownProfile = true,
  -- an OCI module refused before any pod runs: a signature or a login to fix
  SignatureMissing = true,
  SignatureInvalid = true,
  CredentialsRefused = true,
  PullSecretInvalid = true,
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

-- A condition written for an older generation says nothing about the current spec.
local function current(c, generation)
  return generation == nil or c.observedGeneration == nil or c.observedGeneration >= generation
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

local degraded = find(status.conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" and current(degraded, generation) then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

local ready = find(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" and current(ready, generation) then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready ~= nil and ready.status == "False" and failures[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
if ready ~= nil then
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
