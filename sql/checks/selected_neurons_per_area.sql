-- Each area of each recording (modality) that has recorded neurons keeps at least
-- $min_selected_per_area selected ones.
SELECT modality, area, count(*) FILTER (WHERE selected) AS n_selected, count(*) AS n_recorded,
       'too few selected neurons' AS problem
FROM neurons
GROUP BY modality, area
HAVING count(*) FILTER (WHERE selected) < $min_selected_per_area;
