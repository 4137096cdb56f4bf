from django.urls import path

from readouts import views

app_name = "readouts"
urlpatterns = [
    path("docs/metrics", views.metrics_doc, name="metrics_doc"),
    path("learnings/", views.learnings_page, name="learnings"),
    path("experiments/<slug:slug>/readout", views.readout_page, name="page"),
    path("experiments/<slug:slug>/readout.csv", views.readout_csv_export, name="csv"),
    path("experiments/<slug:slug>/readout-bundle.zip", views.readout_bundle_download, name="bundle"),
    path("experiments/<slug:slug>/readout/narrative", views.readout_narrative, name="narrative"),
    path(
        "experiments/<slug:slug>/readout/narrative/regenerate",
        views.readout_narrative_regenerate,
        name="narrative_regenerate",
    ),
    path("experiments/<slug:slug>/readout/refresh", views.readout_refresh, name="refresh"),
    path("api/experiments/<slug:slug>/readout", views.readout_api, name="api"),
    path("api/experiments/<slug:slug>/readout/timeseries", views.readout_timeseries_api, name="api_timeseries"),
]
