-- Placeholder heads (version 0) of streams whose every append was refused.
DELETE FROM streams
WHERE version = 0
  AND EXISTS (SELECT 1 FROM json_each(?1) x
              WHERE streams.env_id = json_extract(x.value, '$.env_id')
                AND streams.entity_id = json_extract(x.value, '$.entity_id'));
