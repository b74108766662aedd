-- Revenue per day and product.
SELECT event_date, sku, sum(price * quantity) AS revenue, count(*) AS purchases
FROM events
WHERE event_type = 'purchase'
GROUP BY event_date, sku
ORDER BY event_date, sku
