from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "examples.django_mount.catalog"
    label = "catalog"
    verbose_name = "Catalogue"
