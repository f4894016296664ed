-- "Is A better than B in VISp, and by how much?" in one query:
--   SELECT * FROM model_differences WHERE model_a = 'A' AND model_b = 'B' AND site = 'VISp';
-- Every pair of model_comparisons in both orders (difference = score A - score B, with its
-- paired bootstrap interval), and a verdict at the Benjamini-Hochberg level of the run.
CREATE OR REPLACE VIEW model_differences AS
WITH both_orders AS (
    SELECT method, layer_selection, modality, site_kind, site, model_a, model_b, difference, ci_low, ci_high,
           p_value, q_value, distinguishable
    FROM model_comparisons
    UNION ALL
    SELECT method, layer_selection, modality, site_kind, site, model_b, model_a, -difference, -ci_high, -ci_low,
           p_value, q_value, distinguishable
    FROM model_comparisons
)
SELECT *,
       CASE WHEN NOT distinguishable THEN 'not distinguishable'
            WHEN difference > 0 THEN 'model_a better'
            ELSE 'model_b better' END AS verdict
FROM both_orders
ORDER BY method, layer_selection, modality, site_kind, site, model_a, model_b;
