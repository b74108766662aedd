-- Leads recorded in the last 10 days.
SELECT count(*) AS leads
FROM leads
WHERE operator_timestamp >= now() - INTERVAL '10 days'
