-- Every model has a score for each method and layer selection in every area of each recording
-- (modality) that has selected neurons there (the methods any model was scored with: pls only
-- when scoring.pls.enabled).
WITH areas AS (SELECT DISTINCT modality, area FROM neurons WHERE selected),
     selections AS (SELECT DISTINCT layer_selection FROM model_scores),
     methods AS (SELECT 'rsa' AS method UNION SELECT 'cka' UNION SELECT 'regression' UNION SELECT DISTINCT method FROM model_scores),
     expected AS (
        SELECT m.model_id, x.method, l.layer_selection, a.modality, a.area
        FROM models AS m, areas AS a, selections AS l, methods AS x
     )
SELECT e.model_id, e.method, e.layer_selection, e.modality, e.area, 'no model score' AS problem
FROM expected AS e
LEFT JOIN model_scores AS s
  ON s.model_id = e.model_id AND s.method = e.method AND s.layer_selection = e.layer_selection
 AND s.modality = e.modality AND s.site_kind = 'area' AND s.site = e.area
WHERE s.model_id IS NULL;
