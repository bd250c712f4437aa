// txoutbox dashboard: the little the server-rendered pages cannot do alone. Served by the sidecar (script-src 'self').
(function () {
  'use strict';
  var TOKEN_KEY = 'txoutbox-dashboard-token';

  // The write token, once typed, is kept for this tab only (sessionStorage), and filled into later forms.
  function rememberToken(root) {
    root.querySelectorAll('input[name="token"]').forEach(function (input) {
      if (!input.value) input.value = sessionStorage.getItem(TOKEN_KEY) || '';
      var form = input.form;
      if (form && !form.dataset.tokenHooked) {
        form.dataset.tokenHooked = '1';
        form.addEventListener('submit', function () {
          if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
        });
      }
    });
  }

  // "Select all" for the rows of a list.
  function selectAll(root) {
    root.querySelectorAll('input[data-select-all]').forEach(function (box) {
      box.addEventListener('change', function () {
        var form = box.form;
        if (!form) return;
        form.querySelectorAll('input[type="checkbox"][name="' + box.dataset.selectAll + '"]').forEach(function (row) {
          row.checked = box.checked;
        });
      });
    });
  }

  // Published per second, the last 15 minutes: uPlot, fed by /api/rates every few seconds.
  var chart = null;
  var COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#ca8a04'];
  function drawRates() {
    var box = document.getElementById('rates');
    if (!box || typeof uPlot === 'undefined') return;
    fetch(box.dataset.src, { headers: { accept: 'application/json' } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (rates) {
        if (!rates || !document.body.contains(box)) return;
        var data = [rates.times].concat(rates.values);
        var width = Math.max(320, box.clientWidth || 800);
        if (chart && chart.root.parentNode === box && chart.series.length === rates.names.length + 1) {
          chart.setData(data);
          return;
        }
        if (chart) chart.destroy();
        box.textContent = '';
        chart = new uPlot(
          {
            width: width,
            height: 220,
            series: [{}].concat(
              rates.names.map(function (name, i) {
                return { label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false };
              }),
            ),
            axes: [{}, { label: 'published/s' }],
            scales: {
              // Always the last 15 minutes, however few readings there are yet.
              x: {
                time: true,
                range: function () {
                  var end = Date.now() / 1000;
                  return [end - 900, end];
                },
              },
              y: {
                range: function (u, min, max) {
                  return [0, Math.max(1, max)];
                },
              },
            },
          },
          data,
          box,
        );
      })
      .catch(function () {});
  }

  function init(root) {
    rememberToken(root);
    selectAll(root);
    drawRates();
  }
  document.addEventListener('DOMContentLoaded', function () {
    init(document);
    setInterval(drawRates, 5000);
  });
  document.addEventListener('htmx:load', function (event) {
    init(event.target);
  });
})();
