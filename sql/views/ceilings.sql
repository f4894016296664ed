-- The two ceilings of each area, recording and method side by side: the split-half noise ceiling
-- (RSA: the area RDM's reliability; regression: the mean neuron reliability) and the inter-animal
-- consistency (how well the other animals' neurons predict the area's, scored as the models are),
-- raw and split-half corrected, with the best model's score against both (divided by the
-- consistency only where its interval lies above 0).
CREATE OR REPLACE VIEW ceilings AS
WITH split_half AS (
    SELECT method, modality, site AS area, any_value(noise_ceiling) AS split_half_ceiling
    FROM model_scores
    WHERE site_kind = 'area'
    GROUP BY method, modality, site
),
best AS (
    SELECT method, layer_selection, modality, site AS area, arg_max(model_id, score) AS best_model_id,
           max(score) AS best_score
    FROM model_scores
    WHERE site_kind = 'area'
    GROUP BY method, layer_selection, modality, site
)
SELECT c.area, c.modality, c.method, b.layer_selection, s.split_half_ceiling,
       c.score AS interanimal_consistency, c.ci_low AS interanimal_ci_low, c.ci_high AS interanimal_ci_high,
       c.normalized_score AS interanimal_corrected, c.n_animals, c.n_neurons,
       b.best_model_id, b.best_score,
       CASE WHEN c.ci_low > 0 THEN b.best_score / c.score END AS best_normalized_interanimal
FROM interanimal_consistency AS c
LEFT JOIN split_half AS s USING (method, modality, area)
LEFT JOIN best AS b USING (method, modality, area)
ORDER BY c.modality, c.area, c.method, b.layer_selection;
