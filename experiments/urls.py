from django.urls import path

from experiments import api, views

app_name = "experiments"
urlpatterns = [
    path("review/", views.review_queue, name="review_queue"),
    path("review/<slug:slug>/", views.review_detail, name="review_detail"),
    path("review/<slug:slug>/approve", views.review_approve, name="review_approve"),
    path("review/<slug:slug>/request-changes", views.review_request_changes, name="review_request_changes"),
    path("experiments/<slug:slug>/history", views.experiment_history, name="experiment_history"),
    path("experiments/<slug:slug>/decide", views.experiment_decide, name="decide"),
    path("experiments/<slug:slug>/decision-bundle.zip", views.decision_bundle, name="decision_bundle"),
    path("metrics/", views.metric_list, name="metric_list"),
    path("metrics/<str:key>/", views.metric_detail, name="metric_detail"),
    path("api/metrics", api.metric_list_api, name="api_metric_list"),
    path("api/metrics/<str:key>", api.metric_detail_api, name="api_metric_detail"),
]
