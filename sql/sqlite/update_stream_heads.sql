-- The new heads of the streams a batch appended to (a JSON array).
UPDATE streams
SET entity_type = json_extract(x.value, '$.entity_type'),
    version = json_extract(x.value, '$.version'),
    event_count = event_count + json_extract(x.value, '$.added'),
    deleted = json_extract(x.value, '$.deleted'),
    updated_at = json_extract(x.value, '$.at')
FROM json_each(?1) x
WHERE streams.env_id = json_extract(x.value, '$.env_id')
  AND streams.entity_id = json_extract(x.value, '$.entity_id');
