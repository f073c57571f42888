-- "Retry on another backend": the backend the operator asked to avoid for this job's next run.
ALTER TABLE jobs ADD COLUMN avoid_backend TEXT;
