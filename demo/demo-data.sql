-- Demo catalogue for the local run (`./dev up`); applied only when the table is empty.
INSERT INTO products (name, price, stock, initial_stock)
SELECT name, price, stock, stock
FROM (VALUES
    ('Americano', 4500, 500),
    ('Cafe Latte', 5000, 300),
    ('Cold Brew', 5500, 200),
    ('Green Tea Latte', 5800, 150),
    ('Butter Croissant', 3800, 120),
    ('Cheesecake Slice', 6500, 80),
    ('Drip Bag Set (10)', 15000, 60),
    ('Ceramic Mug', 18000, 40),
    ('Tumbler 473ml', 32000, 25),
    ('Hand Grinder', 89000, 10),
    ('Limited Edition Beans 250g', 24000, 5),
    ('Gift Card 50,000', 50000, 1000)
) AS demo(name, price, stock)
WHERE NOT EXISTS (SELECT 1 FROM products);
