"""The report page: one jinja2 template with its style inline (no scripts, fonts or other files)."""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="segwise report">
<title>segwise report: {{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: .9em; height: .9em; border: 1px solid #888; vertical-align: middle;
          margin-right: .4em; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figcaption { font-size: .85rem; color: #555; }
img { max-width: 100%; height: auto; }
#worst-images img { min-width: min(100%, 640px); image-rendering: pixelated; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .8rem; }
.note { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<h1>segwise report: {{ title }}</h1>
<p class="note">run {{ run }}{% if eval_dir %}; evaluation {{ eval_dir }}{% endif %}</p>

<section id="settings">
<h2>Settings</h2>
{% if model %}
<table class="model">
{% for key, value in model %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}
{% if classes %}<tr><th>classes</th><td>{% for name, colour in classes %}<span class="swatch" style="background: {{ colour }}"></span>{{ name }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endif %}
</table>
{% else %}<p class="note">no model.yaml in the run.</p>{% endif %}
{% if config_text %}<details><summary>config.yaml</summary><pre>{{ config_text }}</pre></details>
{% else %}<p class="note">no config.yaml in the run.</p>{% endif %}
</section>

<section id="curves">
<h2>Training curves</h2>
<div class="figures">
{% for caption, uri in curves %}<figure><img src="{{ uri }}" alt="{{ caption }}"></figure>
{% else %}<p class="note">the event files hold no scalars.</p>{% endfor %}
</div>
</section>

{% if semantic %}
<section id="per-class">
<h2>Per-class metrics</h2>
<table class="per-class">
<tr><th>class</th>{% for label in semantic.columns %}<th>{{ label }} %</th>{% endfor %}<th>GT pixels</th></tr>
{% for row in semantic.rows %}<tr><td>{{ row.name }}</td>{% for value in row["values"] %}<td class="num">{{ value | pct }}</td>{% endfor %}<td class="num">{{ "{:,}".format(row.support) }}</td></tr>
{% endfor %}
</table>
<table class="summary">
{% for name, value in semantic.summary %}<tr><th>{{ name }}</th><td class="num">{{ value | pct }} %</td></tr>
{% endfor %}
</table>
</section>

<section id="confusion">
<h2>Confusion matrix</h2>
{% if semantic.confusion %}
<img src="{{ semantic.confusion.uri }}" alt="row-normalised confusion matrix">
<table id="confusion-matrix" hidden data-classes="{{ semantic.confusion.classes_json }}" data-matrix="{{ semantic.confusion.matrix_json }}">
<tr><th>ground truth \\ prediction</th>{% for name in semantic.confusion.classes %}<th>{{ name }}</th>{% endfor %}</tr>
{% for name, row in semantic.confusion.rows %}<tr><th>{{ name }}</th>{% for count in row %}<td>{{ count }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% else %}<p class="note">{{ semantic.confusion_missing }}</p>{% endif %}
</section>

<section id="worst-images">
<h2>Worst images</h2>
{% for panel in semantic.panels %}<figure><img src="{{ panel.uri }}" alt="{{ panel.name }}"><figcaption>{{ panel.name }}{% if panel.miou is not none %}: mIoU {{ panel.miou | pct }} %{% endif %}</figcaption></figure>
{% else %}<p class="note">no panels in {{ eval_dir }}/plots/: run <code>segwise eval ... --plots 8</code> for the 8 worst images.</p>{% endfor %}
{% if semantic.more_panels %}<p class="note">{{ semantic.more_panels }} more panels in {{ eval_dir }}/plots/.</p>{% endif %}
</section>
{% endif %}

{% if sketch %}
<section id="sketch">
<h2>Sketch segmentation</h2>
<p class="note">split {{ sketch.split }}; per-stroke part labels of {{ sketch.model }}.</p>
<table class="sketch">
<tr><th>category</th>{% for label in sketch.columns %}<th>{{ label }} %</th>{% endfor %}<th>sketches</th><th>strokes</th></tr>
{% for name, values, sketches, strokes in sketch.rows %}<tr><td>{{ name }}</td>{% for value in values %}<td class="num">{{ value | pct }}</td>{% endfor %}<td class="num">{{ sketches }}</td><td class="num">{{ strokes }}</td></tr>
{% endfor %}
</table>
{% if sketch.panels %}<h3>Worst sketches: ground truth | prediction</h3>
{% for panel in sketch.panels %}<figure><img src="{{ panel.uri }}" alt="{{ panel.name }}"><figcaption>{{ panel.name }}</figcaption></figure>
{% endfor %}{% else %}<p class="note">no drawings in {{ eval_dir }}/plots/: run <code>segwise sketch eval ... --plots 8</code> for the 8 worst sketches.</p>{% endif %}
{% for category, parts in sketch.parts %}<details><summary>{{ category }}: stroke accuracy per part</summary>
<table><tr><th>part</th><th>strokes</th><th>accuracy %</th></tr>
{% for part, counts in parts %}<tr><td>{{ part }}</td><td class="num">{{ counts.strokes }}</td><td class="num">{{ counts.accuracy | pct }}</td></tr>
{% endfor %}</table></details>
{% endfor %}
</section>
{% endif %}

{% if trimap %}
<section id="trimap">
<h2>Trimap segmentation</h2>
<table class="trimap">
<tr><th>data set</th><th>images</th>{% for label in trimap.columns %}<th>{{ label }}</th>{% endfor %}</tr>
{% for name, images, values in trimap.rows %}<tr><td>{{ name }}</td><td class="num">{{ images }}</td>{% for value in values %}<td class="num">{{ value }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% for name, uri in trimap.figures %}<figure><img src="{{ uri }}" alt="predicted trimaps of {{ name }}"><figcaption>predicted trimaps of {{ name }}</figcaption></figure>
{% else %}<p class="note">no saved trimaps: run <code>segwise trimap eval ... --save</code> to see them here.</p>{% endfor %}
{% for name, overlays in trimap.overlays %}<h3>{{ name }}: images with the predicted background / unknown / foreground</h3>
{% for overlay in overlays %}<figure><img src="{{ overlay.uri }}" alt="overlay {{ overlay.name }}"><figcaption>{{ overlay.name }}</figcaption></figure>
{% endfor %}{% endfor %}
</section>
{% endif %}
</body>
</html>
"""
