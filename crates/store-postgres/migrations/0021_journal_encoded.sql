-- The journal's data is stored encoded (issue 27 item 4: zstd with a dictionary built
-- into nurture, about a tenth of the JSON; `nurture_store::encoding`). The rows written
-- before keep their JSON text, as bytes; the reader tells them apart by their first byte.
-- SQL can no longer read inside `data`: nothing in nurture does (the journal is read by
-- run or by contact, whole).
ALTER TABLE journal ALTER COLUMN data TYPE bytea USING convert_to(data::text, 'UTF8');
