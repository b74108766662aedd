-- For each company, how many of its leads work in the country of its headquarters.
SELECT c.company, c.hq_location, count(l.company) AS leads_in_hq_country
FROM companies c
LEFT JOIN leads l ON l.company = c.company AND l.country = c.hq_location
GROUP BY c.company, c.hq_location
ORDER BY c.company
