from django.contrib import admin

from examples.django_mount.catalog.models import Book


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "year"]
    search_fields = ["title", "author"]
