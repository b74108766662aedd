-- The 20 countries with the most leads.
SELECT country, count(*) AS leads
FROM leads
GROUP BY country
ORDER BY leads DESC, country
LIMIT 20
