-- Leads per month this year.
SELECT date_trunc('month', operator_timestamp) AS month, count(*) AS leads
FROM leads
WHERE operator_timestamp >= date_trunc('year', now())
GROUP BY 1
ORDER BY 1
