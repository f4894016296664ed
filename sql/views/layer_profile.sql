-- Score along each model's depth: RSA and CKA per layer and site, and the mean regression
-- score over each area's selected neurons per layer.
CREATE OR REPLACE VIEW layer_profile AS
SELECT r.model_id, 'rsa' AS method, r.modality, r.site_kind, r.site, r.layer_index, l.layer_name, l.depth, r.score
FROM rsa_scores AS r
JOIN layers AS l USING (model_id, layer_index)
UNION ALL
SELECT c.model_id, 'cka' AS method, c.modality, c.site_kind, c.site, c.layer_index, l.layer_name, l.depth, c.score
FROM cka_scores AS c
JOIN layers AS l USING (model_id, layer_index)
UNION ALL
SELECT g.model_id, 'regression' AS method, n.modality, 'area' AS site_kind, n.area AS site, g.layer_index,
       l.layer_name, l.depth, avg(g.score) AS score
FROM regression_scores AS g
JOIN neurons AS n USING (neuron_id)
JOIN layers AS l USING (model_id, layer_index)
GROUP BY g.model_id, n.modality, n.area, g.layer_index, l.layer_name, l.depth
ORDER BY model_id, method, modality, site, depth;
